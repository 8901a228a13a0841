//! Building and running a validated pipeline.
//!
//! Every component runs as one task that drives its lazy [`BatchStream`] and forwards each
//! batch into one bounded channel per consumer (fan-out clones the batch, which shares its
//! arrays). Before pulling the next batch from upstream, a task reserves a slot in every output
//! channel, so a component never holds a batch while it waits: at any moment, the batches
//! produced but not consumed are exactly those sitting in channels, bounded by their capacity.
//!
//! # Errors and cancellation
//! The first fatal error is reported with its component's name; the failing task tells its
//! consumers, every other task is aborted (tasks are spawned through [`spawn::spawn`], which
//! aborts on drop), and no sink commits a manifest. A drain request (first Ctrl-C) makes
//! sources stop early; what is in flight flows to the sinks, which close their current shard and
//! write a manifest marked `interrupted`. An abort request (second Ctrl-C) stops at once.

pub mod metrics;
pub mod pool;
pub mod progress;
pub mod quarantine;
pub mod spawn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::batch::Batch;
use crate::config::validate::{Plan, validate};
use crate::config::{self, LoadedConfig, PipelineConfig, Section, SinkConfig};
use crate::error::{Error, Result};
use crate::stream::BatchStream;
use metrics::{ComponentMetrics, RunSummary};
use pool::WorkerPool;
use quarantine::Quarantine;

/// What every component can see while it runs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The pipeline seed.
    pub seed: u64,
    /// The shared CPU worker pool.
    pub pool: Arc<WorkerPool>,
    /// Drain / abort requests.
    pub shutdown: ShutdownSignal,
    /// Set by a source that stopped early because of a drain request.
    pub truncated: Arc<AtomicBool>,
    /// Set when the pipeline failed; sinks must not commit after it is set.
    pub failed: Arc<AtomicBool>,
    /// Where skipped rows go.
    pub quarantine: Arc<Quarantine>,
    /// sha256 of the resolved configuration.
    pub config_hash: Arc<str>,
    /// Replace non-empty output directories.
    pub overwrite: bool,
    /// Per component, the output directories of the `parquet_shards` sinks downstream of it,
    /// in name order: where stages write their reports (e.g. `mining_report.json`).
    pub output_dirs: Arc<HashMap<String, Vec<PathBuf>>>,
}

/// Levels of a shutdown request.
const DRAIN: u8 = 1;
const ABORT: u8 = 2;

/// The receiving side of shutdown requests.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<u8>);

/// The sending side of shutdown requests (held by the signal handler or a test).
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<watch::Sender<u8>>);

impl Shutdown {
    /// A new pair.
    pub fn new() -> (Shutdown, ShutdownSignal) {
        let (tx, rx) = watch::channel(0);
        (Shutdown(Arc::new(tx)), ShutdownSignal(rx))
    }

    /// Asks sources to stop and everything in flight to drain to the sinks.
    pub fn drain(&self) {
        self.0.send_if_modified(|v| {
            let changed = *v < DRAIN;
            *v = (*v).max(DRAIN);
            changed
        });
    }

    /// Asks the pipeline to stop at once.
    pub fn abort(&self) {
        self.0.send_replace(ABORT);
    }

    /// The current level: 0 running, 1 draining, 2 aborting.
    pub fn level(&self) -> u8 {
        *self.0.borrow()
    }
}

impl ShutdownSignal {
    /// Resolves once a drain (or abort) has been requested.
    pub async fn draining(&mut self) {
        let _ = self.0.wait_for(|v| *v >= DRAIN).await;
    }

    /// Resolves once an abort has been requested.
    pub async fn aborting(&mut self) {
        if self.0.wait_for(|v| *v >= ABORT).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// Whether a drain or abort was requested.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow() >= DRAIN
    }
}

/// A sink supplied by the caller instead of the configured one: receives the sink's input
/// stream and returns when it is done with it.
pub type CustomSink = Box<dyn FnOnce(BatchStream) -> BoxFuture<'static, Result<()>> + Send>;

/// How to run a pipeline.
#[derive(Default)]
pub struct RunOptions {
    /// Replace non-empty output directories (`--overwrite`).
    pub overwrite: bool,
    /// Worker pool size; overrides `runtime.workers`.
    pub workers: Option<usize>,
    /// Show progress on stderr.
    pub progress: progress::ProgressMode,
    /// Shutdown requests; default: none (the CLI wires SIGINT/SIGTERM here).
    pub shutdown: Option<ShutdownSignal>,
    /// Streams that replace configured sources, by name (their batches must match the
    /// source's validated schema).
    pub sources: HashMap<String, BatchStream>,
    /// Consumers that replace configured sinks, by name.
    pub sinks: HashMap<String, CustomSink>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("overwrite", &self.overwrite)
            .field("workers", &self.workers)
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A loaded and validated pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    loaded: LoadedConfig,
    plan: Plan,
}

impl Pipeline {
    /// Loads `path`, applies `--set` overrides and validates everything (files, columns,
    /// types, graph).
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem, or [`Error::Io`] when the file is unreadable.
    pub fn load(path: &std::path::Path, overrides: &[String]) -> Result<Pipeline> {
        Self::from_loaded(config::load_partial(path, overrides)?)
    }

    /// Like [`Pipeline::load`], from YAML text.
    ///
    /// # Errors
    /// As [`Pipeline::load`].
    pub fn from_yaml(text: &str, overrides: &[String]) -> Result<Pipeline> {
        Self::from_loaded(config::load_str_partial(text, None, overrides)?)
    }

    /// Validates an already loaded configuration.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem.
    pub fn from_loaded(loaded: LoadedConfig) -> Result<Pipeline> {
        let plan = validate(&loaded)?;
        Ok(Pipeline { loaded, plan })
    }

    /// The typed configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.loaded.config
    }

    /// The loaded configuration with its YAML tree.
    pub fn loaded(&self) -> &LoadedConfig {
        &self.loaded
    }

    /// What validation computed: order, schemas, warnings.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs the pipeline on a new multi-threaded tokio runtime and blocks until it ends.
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    pub fn run_blocking(&self, opts: RunOptions) -> Result<RunSummary> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("tripline-rt")
            .build()
            .map_err(|e| Error::Other(format!("starting the async runtime: {e}")))?;
        rt.block_on(self.run(opts))
    }

    /// Runs the pipeline to completion.
    ///
    /// Returns the summary; when a drain was requested the summary says `interrupted` and the
    /// sinks have committed what they received.
    ///
    /// # Errors
    /// The first fatal error, wrapped with its component's name; [`Error::Interrupted`] after
    /// an abort request.
    ///
    /// # Cancellation
    /// Dropping the returned future aborts every task of the run.
    pub async fn run(&self, mut opts: RunOptions) -> Result<RunSummary> {
        let started = Instant::now();
        let cfg = &self.loaded.config;
        let workers = opts.workers.or(cfg.runtime.workers).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let (_own_shutdown, own_signal) = Shutdown::new();
        let shutdown = opts.shutdown.clone().unwrap_or(own_signal);
        let quarantine_dir = cfg.runtime.quarantine.clone().unwrap_or_else(|| {
            cfg.sinks
                .iter()
                .find_map(|(name, s)| match s {
                    SinkConfig::ParquetShards(p) if !opts.sinks.contains_key(name) => {
                        Some(p.path.join("quarantine"))
                    }
                    _ => None,
                })
                .unwrap_or_else(|| PathBuf::from("quarantine"))
        });
        let ctx = Ctx {
            seed: cfg.seed,
            pool: WorkerPool::new(workers),
            shutdown: shutdown.clone(),
            truncated: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicBool::new(false)),
            quarantine: Arc::new(Quarantine::new(quarantine_dir)),
            config_hash: Arc::from(self.loaded.config_hash.as_str()),
            overwrite: opts.overwrite,
            output_dirs: Arc::new(self.output_dirs(&opts)),
        };

        // Sinks check and prepare their output directories before anything runs.
        let mut prepared = HashMap::new();
        for (name, sink) in &cfg.sinks {
            if !opts.sinks.contains_key(name) {
                let p = crate::sinks::prepare(sink, &ctx).map_err(|e| e.in_component(name))?;
                prepared.insert(name.clone(), p);
            }
        }

        // One bounded channel per (producer, consumer) edge.
        let mut senders: HashMap<String, Vec<Edge>> = HashMap::new();
        let mut receivers: HashMap<(String, String), mpsc::Receiver<Msg>> = HashMap::new();
        let mut all_metrics: Vec<Arc<ComponentMetrics>> = Vec::new();
        let mut metrics_by_name: HashMap<String, Arc<ComponentMetrics>> = HashMap::new();
        for (section, name) in &self.plan.order {
            let kind = match section {
                Section::Sources => cfg.sources[name].kind(),
                Section::Stages => cfg.stages[name].kind(),
                Section::Sinks => cfg.sinks[name].kind(),
            };
            let m = ComponentMetrics::new(name, section.noun(), kind);
            all_metrics.push(m.clone());
            metrics_by_name.insert(name.clone(), m.clone());
            if *section == Section::Sinks {
                continue;
            }
            let cap = self.capacity(*section, name).max(1);
            for consumer in self.plan.consumers.get(name).into_iter().flatten() {
                let (tx, rx) = mpsc::channel(cap);
                m.queue_capacity.fetch_add(cap as u64, Ordering::Relaxed);
                senders.entry(name.clone()).or_default().push(Edge {
                    tx,
                    metrics: m.clone(),
                });
                receivers.insert((name.clone(), consumer.clone()), rx);
            }
        }

        let mut tasks = FuturesUnordered::new();
        let mut handles = Vec::new();
        for (section, name) in &self.plan.order {
            let m = metrics_by_name[name].clone();
            let mut edge = |i: &String| -> BatchStream {
                let rx = receivers
                    .remove(&(i.clone(), name.clone()))
                    .expect("edge exists");
                receive(i.clone(), rx, metrics_by_name[i].clone())
            };
            let mut inputs = |ins: &[String]| -> BatchStream {
                let streams: Vec<BatchStream> = ins.iter().map(&mut edge).collect();
                futures::stream::iter(streams).flatten().boxed()
            };
            let fut: BoxFuture<'static, Result<()>> = match section {
                Section::Sources => {
                    let stream = match opts.sources.remove(name) {
                        Some(s) => s,
                        None => crate::sources::build(
                            &cfg.sources[name],
                            &self.plan.sources[name],
                            &ctx,
                            m.clone(),
                        ),
                    };
                    Box::pin(drive(
                        name.clone(),
                        stream,
                        senders.remove(name).unwrap_or_default(),
                        m.clone(),
                    ))
                }
                Section::Stages => {
                    let stage = &cfg.stages[name];
                    let input = inputs(stage.inputs());
                    let side = stage
                        .side_inputs()
                        .into_iter()
                        .map(|(_, i)| inputs(std::slice::from_ref(i)))
                        .collect();
                    let stream = crate::stages::build(name, stage, input, side, &ctx, m.clone())
                        .map_err(|e| e.in_component(name))?;
                    Box::pin(drive(
                        name.clone(),
                        stream,
                        senders.remove(name).unwrap_or_default(),
                        m.clone(),
                    ))
                }
                Section::Sinks => {
                    let input = count_sink_input(inputs(cfg.sinks[name].inputs()), m.clone());
                    match opts.sinks.remove(name) {
                        Some(custom) => custom(input),
                        None => {
                            let p = prepared.remove(name).expect("prepared above");
                            crate::sinks::run(p, input, ctx.clone(), m.clone())
                        }
                    }
                }
            };
            let name = name.clone();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            handles.push(spawn::spawn(async move {
                let _ = done_tx.send(fut.await);
            }));
            tasks.push(async move { (name, done_rx.await.ok()) });
        }

        let progress = progress::start(opts.progress, all_metrics.clone(), started);
        let mut abort_signal = shutdown.clone();
        let mut first_error: Option<Error> = None;
        let mut secondary: Option<Error> = None;
        loop {
            tokio::select! {
                biased;
                _ = abort_signal.aborting() => {
                    ctx.failed.store(true, Ordering::SeqCst);
                    stop_all(handles).await;
                    progress.finish();
                    return Err(Error::Interrupted);
                }
                next = tasks.next() => match next {
                    None => break,
                    Some((name, result)) => match result {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            let e = e.in_component(&name);
                            if is_secondary(&e) {
                                secondary.get_or_insert(e);
                            } else {
                                first_error = Some(e);
                                break;
                            }
                        }
                        None => {}
                    },
                },
            }
        }
        if let Some(e) = first_error.or(secondary) {
            ctx.failed.store(true, Ordering::SeqCst);
            drop(tasks);
            stop_all(handles).await;
            progress.finish();
            return Err(e);
        }
        stop_all(handles).await;
        progress.finish();
        ctx.quarantine.flush()?;
        let elapsed = started.elapsed().as_secs_f64();
        let rows_quarantined = ctx.quarantine.rows();
        Ok(RunSummary {
            tripline_version: env!("CARGO_PKG_VERSION"),
            interrupted: ctx.truncated.load(Ordering::SeqCst),
            seconds: elapsed,
            components: all_metrics.iter().map(|m| m.summary(elapsed)).collect(),
            rows_quarantined,
            quarantine: (rows_quarantined > 0).then(|| ctx.quarantine.dir().display().to_string()),
            config_hash: self.loaded.config_hash.clone(),
        })
    }

    fn output_dirs(&self, opts: &RunOptions) -> HashMap<String, Vec<PathBuf>> {
        let cfg = &self.loaded.config;
        let mut out = HashMap::new();
        for (_, name) in &self.plan.order {
            let mut dirs = Vec::new();
            let mut stack = vec![name.clone()];
            let mut seen = std::collections::HashSet::new();
            while let Some(n) = stack.pop() {
                if !seen.insert(n.clone()) {
                    continue;
                }
                if let Some(SinkConfig::ParquetShards(p)) = cfg.sinks.get(&n)
                    && !opts.sinks.contains_key(&n)
                {
                    dirs.push(p.path.clone());
                }
                stack.extend(self.plan.consumers.get(&n).into_iter().flatten().cloned());
            }
            dirs.sort();
            out.insert(name.clone(), dirs);
        }
        out
    }

    fn capacity(&self, section: Section, name: &str) -> usize {
        let cfg = &self.loaded.config;
        let own = match section {
            Section::Sources => match &cfg.sources[name] {
                config::SourceConfig::Parquet(c) => c.buffer,
                config::SourceConfig::ArrowIpc(c) => c.buffer,
            },
            Section::Stages => crate::stages::buffer(&cfg.stages[name]),
            Section::Sinks => None,
        };
        own.unwrap_or(cfg.runtime.channel_capacity)
    }
}

/// Aborts every task and waits until each has been dropped, so that nothing of the run is left
/// behind when `run` returns.
async fn stop_all(handles: Vec<spawn::TaskHandle<()>>) {
    for h in handles {
        h.abort_and_wait().await;
    }
}

/// What travels on a channel between two components.
enum Msg {
    Batch(Batch),
    /// The producer finished normally.
    End,
    /// The producer failed (its error goes to the coordinator).
    Failed,
}

struct Edge {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<ComponentMetrics>,
}

fn is_secondary(e: &Error) -> bool {
    match e {
        Error::Component { source, .. } => is_secondary(source),
        Error::Other(m) => m.starts_with(UPSTREAM_FAILED) || m.starts_with(DOWNSTREAM_GONE),
        _ => false,
    }
}

const UPSTREAM_FAILED: &str = "upstream component";
const DOWNSTREAM_GONE: &str = "downstream component stopped";

/// Pulls batches from `stream` and forwards them to every edge, reserving a slot in every
/// edge before pulling (so nothing is held while waiting).
async fn drive(
    name: String,
    mut stream: BatchStream,
    outs: Vec<Edge>,
    m: Arc<ComponentMetrics>,
) -> Result<()> {
    loop {
        let mut permits = Vec::with_capacity(outs.len());
        for e in &outs {
            match e.tx.reserve().await {
                Ok(p) => permits.push(p),
                Err(_) => {
                    for e in &outs {
                        let _ = e.tx.try_send(Msg::Failed);
                    }
                    return Err(Error::Other(format!("{DOWNSTREAM_GONE} reading `{name}`")));
                }
            }
        }
        match stream.next().await {
            Some(Ok(b)) => {
                m.rows_out.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                m.batches_out.fetch_add(1, Ordering::Relaxed);
                for (p, e) in permits.into_iter().zip(&outs) {
                    e.metrics.queued.fetch_add(1, Ordering::Relaxed);
                    p.send(Msg::Batch(b.clone()));
                }
            }
            Some(Err(e)) => {
                for p in permits {
                    p.send(Msg::Failed);
                }
                return Err(e);
            }
            None => {
                for p in permits {
                    p.send(Msg::End);
                }
                return Ok(());
            }
        }
    }
}

/// The consuming end of an edge as a stream: ends on `End`, fails on `Failed` or when the
/// producer vanished without finishing.
fn receive(
    from: String,
    mut rx: mpsc::Receiver<Msg>,
    upstream: Arc<ComponentMetrics>,
) -> BatchStream {
    Box::pin(async_stream::try_stream! {
        loop {
            match rx.recv().await {
                Some(Msg::Batch(b)) => {
                    upstream.queued.fetch_sub(1, Ordering::Relaxed);
                    yield b;
                }
                Some(Msg::End) => break,
                Some(Msg::Failed) | None => {
                    Err(Error::Other(format!("{UPSTREAM_FAILED} `{from}` failed")))?;
                }
            }
        }
    })
}

/// Counts a sink's `rows_in` as it reads (stages count their own input).
fn count_sink_input(input: BatchStream, m: Arc<ComponentMetrics>) -> BatchStream {
    input
        .inspect(move |b| {
            if let Ok(b) = b {
                m.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
        })
        .boxed()
}
