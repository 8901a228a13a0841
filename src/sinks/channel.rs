//! Training batches for a trainer in the same process: a pipeline's sink replaced by a bounded
//! [`crossbeam_channel`].
//!
//! ```no_run
//! use std::collections::HashMap;
//! use tripline::sinks::channel::channel_sink;
//! use tripline::{Pipeline, RunOptions};
//!
//! let pipeline = Pipeline::load("pipelines/serve.yaml".as_ref(), &[])?;
//! let (sink, batches) = channel_sink(4);
//! let run = std::thread::spawn(move || {
//!     pipeline.run_blocking(RunOptions {
//!         sinks: HashMap::from([("trainer".to_string(), sink)]),
//!         ..Default::default()
//!     })
//! });
//! for tb in batches {
//!     // one training step per batch
//!     println!("epoch {} batch {}: {} rows", tb.epoch, tb.seq, tb.batch.num_rows());
//! }
//! run.join().expect("pipeline thread")?;
//! # Ok::<(), tripline::Error>(())
//! ```
//!
//! # Backpressure
//! The channel holds at most `capacity` batches. When it is full the sink waits (on a blocking
//! thread, never on the async runtime's threads) and so does everything upstream: a slow
//! receiver slows the pipeline. At any moment the batches produced but not received are at most
//! `capacity`, plus the one batch the sink is handing over, plus what the pipeline's own bounded
//! channels hold.
//!
//! # End and errors
//! The receiver sees the channel disconnect when the pipeline has delivered everything (or
//! failed: the error is what [`Pipeline::run`](crate::Pipeline::run) returns). Dropping the
//! receiver early makes the pipeline fail with an error saying so.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use crossbeam_channel::Receiver;
use tokio::sync::watch;

use crate::runtime::CustomSink;
pub use crate::sinks::flight::Epochs;
use crate::sinks::flight::{FeedSettings, Outlet, run_feed};

/// One training batch with its place in the stream.
#[derive(Debug, Clone)]
pub struct TrainingBatch {
    /// The rows.
    pub batch: RecordBatch,
    /// The epoch, from 0.
    pub epoch: u64,
    /// Position of the batch within its epoch, from 0 (the serving order).
    pub seq: u64,
    /// Position of the batch in the first pass: the same batch has the same `index` in every
    /// epoch (in epoch 0, `index == seq`).
    pub index: u64,
}

/// Options of [`channel_sink_with`].
#[derive(Debug, Clone)]
pub struct ChannelSinkOptions {
    /// Batches the channel holds at most (0: every hand-over waits for the receiver).
    pub capacity: usize,
    /// Rows per batch; `None` passes the pipeline's batches through as they are. Batches marked
    /// as whole training batches (see [`is_training_batch`](crate::sinks::flight::is_training_batch))
    /// are never split or merged.
    pub batch_size: Option<usize>,
    /// Epochs to deliver. More than one spools the first pass to `spool_dir` and replays it in
    /// an order shuffled by `seed + epoch`.
    pub epochs: Epochs,
    /// Seed of the epoch orders (use the pipeline's: `pipeline.config().seed`).
    pub seed: u64,
    /// Where the spool file goes; default: the system temporary directory.
    pub spool_dir: Option<PathBuf>,
}

impl ChannelSinkOptions {
    /// One epoch of the pipeline's batches as they are, through a channel of `capacity`.
    pub fn new(capacity: usize) -> ChannelSinkOptions {
        ChannelSinkOptions {
            capacity,
            batch_size: None,
            epochs: Epochs::Count(1),
            seed: 0,
            spool_dir: None,
        }
    }
}

/// A sink that hands the pipeline's batches, as they come, to the returned receiver through a
/// channel of `capacity` batches: pass the sink in [`RunOptions::sinks`](crate::RunOptions)
/// under the name of the sink it replaces.
pub fn channel_sink(capacity: usize) -> (CustomSink, Receiver<TrainingBatch>) {
    channel_sink_with(ChannelSinkOptions::new(capacity))
}

/// Like [`channel_sink`], with re-batching and epochs.
///
/// # Panics
/// When `batch_size` is `Some(0)` or `epochs` is `Count(0)`.
pub fn channel_sink_with(opts: ChannelSinkOptions) -> (CustomSink, Receiver<TrainingBatch>) {
    assert!(opts.batch_size != Some(0), "batch_size must be at least 1");
    assert!(opts.epochs != Epochs::Count(0), "epochs must be at least 1");
    let (tx, rx) = crossbeam_channel::bounded(opts.capacity);
    let sink: CustomSink = Box::new(move |input| {
        Box::pin(async move {
            let settings = FeedSettings {
                batch_size: opts.batch_size,
                epochs: opts.epochs,
                seed: opts.seed,
                spool_dir: opts.spool_dir.unwrap_or_else(std::env::temp_dir),
                label: "channel".into(),
            };
            let status = Arc::new(watch::channel(Default::default()).0);
            run_feed(input, settings, Outlet::Channel(tx), status, None, None)
                .await
                .map(|_| ())
        })
    });
    (sink, rx)
}
