//! tripline turns raw labelled records into training data for ranking losses (contrastive,
//! triplet, multiple-negatives): a staged streaming pipeline, defined in YAML, that reads
//! Parquet or Arrow IPC, transforms rows on a pool of workers and writes training-ready Parquet
//! shards with a manifest.
//!
//! ```no_run
//! use tripline::{Pipeline, RunOptions};
//! let pipeline = Pipeline::load("pipelines/passthrough.yaml".as_ref(), &[])?;
//! let summary = pipeline.run_blocking(RunOptions::default())?;
//! println!("{}", summary.render());
//! # Ok::<(), tripline::Error>(())
//! ```
//!
//! # Layout
//! * [`config`] — the YAML types, the loader ([`config::load`]) and validation
//!   ([`config::validate`]), which reports every problem at once with file:line:column.
//! * [`runtime`] — building and running a pipeline: bounded channels, fan-out, the worker pool
//!   ([`runtime::pool`]), cancellation, metrics, progress, quarantine.
//! * [`sources`] — `parquet` and `arrow_ipc`.
//! * [`stages`] — transformations (`clean`).
//! * [`sinks`] — `parquet_shards` and its [`manifest`](sinks::manifest); [`flight`](sinks::flight),
//!   an Arrow Flight server feeding trainer processes; [`channel`](sinks::channel), training
//!   batches for a trainer in the same process.
//! * [`inspect`] — verifying an output directory against its manifest.
//! * [`batch`], [`stream`] — what flows between components, and the stream contract.
//! * [`error`] — the one error type.

#![deny(missing_docs)]

pub mod batch;
pub mod config;
pub mod error;
pub mod inspect;
pub mod runtime;
pub mod sinks;
pub mod sources;
pub mod stages;
pub mod stream;

pub use batch::{Batch, BatchMeta};
pub use error::{Error, Result};
pub use runtime::metrics::RunSummary;
pub use runtime::{Pipeline, RunOptions, Shutdown};
pub use stream::BatchStream;
