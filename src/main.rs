//! The `tripline` command: parse → load → validate → run. Exit codes: 0 ok, 1 runtime failure,
//! 2 invalid configuration or usage, 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tripline::runtime::progress::ProgressMode;
use tripline::{Pipeline, RunOptions, Shutdown};

#[derive(Parser)]
#[command(
    name = "tripline",
    version,
    about = "Turns labelled records into training data for ranking losses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and run a pipeline.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Override a key: `--set sinks.shards.path=out/x` (value parsed as YAML). Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Replace the contents of non-empty output directories.
        #[arg(long)]
        overwrite: bool,
        /// Write the run summary as JSON to this path.
        #[arg(long, value_name = "PATH")]
        metrics_json: Option<PathBuf>,
        /// Worker pool size (default: `runtime.workers`, else the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Progress display: auto (bars on a terminal, log lines otherwise), log, off.
        #[arg(long, default_value = "auto")]
        progress: String,
    },
    /// Validate and run a pipeline that has a `flight` sink; serve until every epoch has been
    /// consumed or Ctrl-C.
    Serve {
        /// The pipeline file.
        file: PathBuf,
        /// Override a key, as for `run`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Replace the contents of non-empty output directories (of a tee'd `parquet_shards`).
        #[arg(long)]
        overwrite: bool,
    },
    /// Check pipeline files without running them; reports every problem.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Overrides, as for `run`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Print the JSON Schema of pipeline files (or the Markdown configuration reference).
    Schema {
        /// Print the configuration reference as Markdown instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Summarise an output directory and verify every shard against its manifest.
    Inspect {
        /// Output directory (or its manifest.json).
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRIPLINE_LOG")
                .unwrap_or_else(|_| "info,ort=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Schema { markdown } => {
            if markdown {
                print!("{}", tripline::config::reference::reference_markdown());
            } else {
                print!("{}", tripline::config::json_schema());
            }
            0
        }
        Command::Validate { files, set } => validate(&files, &set),
        Command::Inspect { path } => match tripline::inspect::inspect(&path) {
            Ok(i) => {
                print!("{}", i.report);
                if i.ok() { 0 } else { 1 }
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Command::Run {
            file,
            set,
            overwrite,
            metrics_json,
            workers,
            progress,
        } => run(
            file,
            set,
            overwrite,
            metrics_json,
            workers,
            &progress,
            false,
        ),
        Command::Serve {
            file,
            set,
            overwrite,
        } => run(file, set, overwrite, None, None, "log", true),
    };
    ExitCode::from(code as u8)
}

fn validate(files: &[PathBuf], set: &[String]) -> i32 {
    let mut worst = 0;
    for f in files {
        match Pipeline::load(f, set) {
            Ok(p) => {
                for w in &p.plan().warnings {
                    eprintln!("{w}");
                }
                println!("{}: ok", f.display());
            }
            Err(e) => {
                eprintln!("{e}");
                worst = worst.max(e.exit_code());
            }
        }
    }
    worst
}

fn run(
    file: PathBuf,
    set: Vec<String>,
    overwrite: bool,
    metrics_json: Option<PathBuf>,
    workers: Option<usize>,
    progress: &str,
    serve: bool,
) -> i32 {
    let progress = match progress {
        "auto" => ProgressMode::Auto,
        "log" => ProgressMode::Log,
        "off" => ProgressMode::Off,
        other => {
            eprintln!("error: --progress must be auto, log or off, not `{other}`");
            return 2;
        }
    };
    let pipeline = match Pipeline::load(&file, &set) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    for w in &pipeline.plan().warnings {
        eprintln!("{w}");
    }
    if serve
        && !pipeline
            .config()
            .sinks
            .values()
            .any(|s| s.kind() == "flight")
    {
        eprintln!(
            "error: {} has no `flight` sink to serve; add one or use `tripline run`",
            file.display()
        );
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return 1;
        }
    };
    let (shutdown, signal) = Shutdown::new();
    let result = rt.block_on(async {
        let _signals = tripline::runtime::spawn::spawn(watch_signals(shutdown));
        pipeline
            .run(RunOptions {
                overwrite,
                workers,
                progress,
                shutdown: Some(signal),
                ..Default::default()
            })
            .await
    });
    rt.shutdown_background();
    match result {
        Ok(summary) => {
            eprint!("{}", summary.render());
            if let Some(path) = metrics_json {
                let json = serde_json::to_string_pretty(&summary).expect("summary serializes");
                if let Err(e) = std::fs::write(&path, json) {
                    eprintln!("error: writing {}: {e}", path.display());
                    return 1;
                }
            }
            if summary.interrupted { 130 } else { 0 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// First SIGINT/SIGTERM: drain (sources stop, sinks commit what they have). Second: abort.
async fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for round in 0.. {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        if round == 0 {
            tracing::warn!("interrupted: draining (press Ctrl-C again to stop at once)");
            shutdown.drain();
        } else {
            shutdown.abort();
        }
    }
}
