//! The crate's one error type.
//!
//! Errors carry their context by wrapping: a Parquet decoding failure inside the source `docs`
//! surfaces as [`Error::Component`] naming `docs`, around [`Error::Input`] naming the file and
//! row group, around the underlying Parquet error.

use std::path::PathBuf;

use crate::config::Problem;

/// Convenience alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, validating or running a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline configuration is invalid; every problem found is listed.
    #[error("{}", format_problems(.0))]
    Config(Vec<Problem>),

    /// An I/O operation on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"reading"`, `"creating"`, …).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Input data could not be read or does not match what was expected.
    #[error("{}: {message}", path.display())]
    Input {
        /// The file the data came from.
        path: PathBuf,
        /// What is wrong, including row group / row / column where known.
        message: String,
    },

    /// A component (source, stage or sink) failed; wraps the cause.
    #[error("component `{component}`: {source}")]
    Component {
        /// The component's name in the pipeline file.
        component: String,
        /// What went wrong inside it.
        #[source]
        source: Box<Error>,
    },

    /// A row was rejected by a stage whose `on_error` policy is `fail`.
    #[error("row {row} of {origin}: {reason}")]
    BadRow {
        /// Where the row came from (source file).
        origin: String,
        /// The row's offset in its source.
        row: u64,
        /// Why it was rejected.
        reason: String,
    },

    /// An Arrow error with context.
    #[error("{context}: {source}")]
    Arrow {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// A Parquet error with context.
    #[error("{context}: {source}")]
    Parquet {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// The output directory holds files and overwriting was not allowed.
    #[error(
        "output directory {} is not empty; pass --overwrite or set `overwrite: true` on the sink",
        .0.display()
    )]
    OutputNotEmpty(PathBuf),

    /// The run was interrupted (Ctrl-C / SIGTERM) before it finished.
    #[error("interrupted")]
    Interrupted,

    /// Anything else, with a message that says what and where.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps `self` with the name of the component it happened in (once).
    pub fn in_component(self, component: &str) -> Error {
        match self {
            e @ Error::Component { .. } => e,
            e @ Error::Interrupted => e,
            e => Error::Component {
                component: component.to_string(),
                source: Box::new(e),
            },
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Arrow`] with `context`.
    pub fn arrow(context: impl Into<String>, source: arrow::error::ArrowError) -> Error {
        Error::Arrow {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Parquet`] with `context`.
    pub fn parquet(context: impl Into<String>, source: parquet::errors::ParquetError) -> Error {
        Error::Parquet {
            context: context.into(),
            source,
        }
    }

    /// The process exit code this error maps to: 2 for configuration problems, 130 for an
    /// interruption, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            Error::Interrupted => 130,
            Error::Component { source, .. } => source.exit_code(),
            _ => 1,
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let mut out = format!(
        "{} problem{} in the pipeline configuration:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}
