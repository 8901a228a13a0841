//! What live serving shares between the `flight` sink and the in-process channel: re-batching
//! into training batches, epochs (the live first pass, then replays of a spool file in a
//! seeded order), and routing batch `seq` of an epoch to rank `seq % world_size`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use prost::bytes::Bytes;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, watch};

use super::Epochs;
use super::encoded::{BatchEncoder, EncodedBatch, Message};
use super::spool::{Payload, ReplayAs, Spool};
use crate::error::{Error, Result};
use crate::runtime::ShutdownSignal;
use crate::runtime::metrics::ComponentMetrics;
use crate::sinks::channel::TrainingBatch;
use crate::stream::BatchStream;

/// Schema metadata key marking record batches that are whole training batches (served intact).
pub const TRAINING_BATCH_KEY: &str = "tripline.training_batch";

/// Whether batches of this schema are whole training batches (metadata
/// `tripline.training_batch = "true"`), which are never split or merged.
pub fn is_training_batch(schema: &Schema) -> bool {
    schema
        .metadata()
        .get(TRAINING_BATCH_KEY)
        .is_some_and(|v| v == "true")
}

/// Cuts input into batches of `size` rows, passing whole training batches through intact.
pub(crate) struct Rebatcher {
    size: Option<usize>,
    parts: Vec<RecordBatch>,
    rows: usize,
}

impl Rebatcher {
    /// `size: None` passes every batch through as it is.
    pub(crate) fn new(size: Option<usize>) -> Rebatcher {
        Rebatcher {
            size,
            parts: Vec::new(),
            rows: 0,
        }
    }

    /// Adds `b`; complete batches are appended to `out`.
    pub(crate) fn push(&mut self, b: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let size = match self.size {
            Some(s) if !is_training_batch(b.schema_ref()) => s,
            _ => {
                self.flush(out)?;
                if b.num_rows() > 0 {
                    out.push(b);
                }
                return Ok(());
            }
        };
        let mut off = 0;
        while off < b.num_rows() {
            let take = (size - self.rows).min(b.num_rows() - off);
            self.parts.push(b.slice(off, take));
            self.rows += take;
            off += take;
            if self.rows == size {
                out.push(self.take()?);
            }
        }
        Ok(())
    }

    /// Emits the last, partial batch.
    pub(crate) fn flush(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.rows > 0 {
            out.push(self.take()?);
        }
        Ok(())
    }

    fn take(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        if self.parts.len() == 1 {
            return Ok(self.parts.pop().expect("one part"));
        }
        let schema = self.parts[0].schema();
        let b = arrow::compute::concat_batches(&schema, &self.parts)
            .map_err(|e| Error::arrow("assembling a batch", e))?;
        self.parts.clear();
        Ok(b)
    }
}

/// A batch on its way to a rank: its place in the stream and its messages, encoded once.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// The epoch, from 0.
    pub epoch: u64,
    /// Position in the epoch.
    pub seq: u64,
    /// Position in the first pass.
    pub index: u64,
    /// The encoded batch.
    pub batch: EncodedBatch,
}

impl Served {
    /// Rows of the batch.
    pub(crate) fn rows(&self) -> usize {
        self.batch.rows()
    }

    /// The Flight messages to send: the batch's dictionaries, then the batch carrying the
    /// metadata `{"epoch": e, "seq": s, "index": i, "rows": r}`.
    pub(crate) fn messages(&self) -> Vec<Message> {
        let meta = serde_json::json!({
            "epoch": self.epoch,
            "seq": self.seq,
            "index": self.index,
            "rows": self.rows(),
        });
        self.batch.to_send(Bytes::from(meta.to_string()))
    }
}

/// What travels from the feed to one rank's queue.
pub(crate) enum Item {
    /// A batch of the epoch.
    Batch(Served),
    /// Every batch of `epoch` for this rank has been queued.
    EpochEnd {
        /// The epoch that ended.
        epoch: u64,
    },
}

/// Progress of the feed, visible to the server (flight info, schema).
#[derive(Debug, Clone, Default)]
pub(crate) struct FeedStatus {
    /// Schema of the served batches; set at the first batch (or empty when the input is
    /// empty).
    pub schema: Option<SchemaRef>,
    /// Batches of the first pass so far.
    pub batches: u64,
    /// Rows of the first pass so far.
    pub rows: u64,
    /// Whether the first pass is complete (`batches` is then the epoch size).
    pub first_pass_complete: bool,
    /// The epoch being routed.
    pub epoch: u64,
    /// Whether the feed stopped (all epochs routed, drained, or failed).
    pub stopped: bool,
    /// Whether the first pass consisted of whole training batches.
    pub training_batches: bool,
}

/// Where the feed delivers.
pub(crate) enum Outlet {
    /// One in-process consumer.
    Channel(crossbeam_channel::Sender<TrainingBatch>),
    /// Ranks of a Flight server: resolves to one queue per rank once the world size is known.
    Ranks(watch::Receiver<Option<Vec<mpsc::Sender<Item>>>>),
}

/// How the feed runs.
pub(crate) struct FeedSettings {
    /// Rows per batch; `None` passes input batches through.
    pub batch_size: Option<usize>,
    /// Epochs to serve.
    pub epochs: Epochs,
    /// Seed of the epoch permutations.
    pub seed: u64,
    /// Directory of the spool file.
    pub spool_dir: PathBuf,
    /// Labels the spool file and messages.
    pub label: String,
}

/// What the feed did.
#[derive(Debug, Default)]
pub(crate) struct FeedReport {
    /// Batches per epoch.
    pub batches_per_epoch: u64,
    /// Epochs routed completely.
    pub epochs_routed: u64,
    /// Whether a drain request stopped the feed early.
    pub drained: bool,
    /// Batches received after a drain request and not served.
    pub batches_not_served: u64,
    /// Spool file size in bytes, when one was written.
    pub spool_bytes: Option<u64>,
}

enum Router {
    Channel {
        tx: crossbeam_channel::Sender<TrainingBatch>,
        gone: Arc<AtomicBool>,
    },
    Ranks(Vec<mpsc::Sender<Item>>),
}

/// Set when the feed future is dropped, so a thread blocked handing a batch over gives up.
struct GoneOnDrop(Arc<AtomicBool>);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Router {
    /// Whether this outlet takes encoded batches (Flight) rather than record batches.
    fn wants_encoded(&self) -> bool {
        matches!(self, Router::Ranks(_))
    }

    /// Sends batch `seq` of `epoch` (`index` in the first pass).
    async fn send(&mut self, epoch: u64, seq: u64, index: u64, p: Payload) -> Result<()> {
        match self {
            Router::Channel { tx, gone } => {
                let Payload::Decoded(batch) = p else {
                    return Err(Error::Other(
                        "the channel sink was handed an encoded batch".into(),
                    ));
                };
                let tb = TrainingBatch {
                    batch,
                    epoch,
                    seq,
                    index,
                };
                Router::hand_over(tx, gone, tb).await
            }
            Router::Ranks(senders) => {
                let Payload::Encoded(batch) = p else {
                    return Err(Error::Other(
                        "the Flight server was handed a batch that is not encoded".into(),
                    ));
                };
                let rank = (seq % senders.len() as u64) as usize;
                let item = Item::Batch(Served {
                    epoch,
                    seq,
                    index,
                    batch,
                });
                senders[rank]
                    .send(item)
                    .await
                    .map_err(|_| Error::Other("the Flight server stopped".into()))
            }
        }
    }

    /// Hands a batch to the channel's receiver, waiting on a blocking thread when it is full.
    async fn hand_over(
        tx: &crossbeam_channel::Sender<TrainingBatch>,
        gone: &Arc<AtomicBool>,
        tb: TrainingBatch,
    ) -> Result<()> {
        match tx.try_send(tb) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(tb)) => {
                // A blocking hand-over, off the async threads; gives up when the feed is
                // dropped.
                let tx = tx.clone();
                let gone = gone.clone();
                tokio::task::spawn_blocking(move || {
                    let mut tb = tb;
                    loop {
                        match tx.send_timeout(tb, Duration::from_millis(100)) {
                            Ok(()) => return Ok(()),
                            Err(crossbeam_channel::SendTimeoutError::Timeout(b)) => {
                                if gone.load(Ordering::SeqCst) {
                                    return Err(receiver_gone());
                                }
                                tb = b;
                            }
                            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                                return Err(receiver_gone());
                            }
                        }
                    }
                })
                .await
                .map_err(|e| Error::Other(format!("handing a batch over: {e}")))?
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(receiver_gone()),
        }
    }

    async fn end_epoch(&mut self, epoch: u64) -> Result<()> {
        if let Router::Ranks(senders) = self {
            for s in senders.iter() {
                s.send(Item::EpochEnd { epoch })
                    .await
                    .map_err(|_| Error::Other("the Flight server stopped".into()))?;
            }
        }
        Ok(())
    }
}

fn receiver_gone() -> Error {
    Error::Other("the receiver of the channel sink was dropped before the end of the input".into())
}

/// Runs `f`, or returns `None` when a drain is requested first.
async fn unless_drained<F: std::future::Future>(
    shutdown: &mut Option<ShutdownSignal>,
    f: F,
) -> Option<F::Output> {
    match shutdown {
        None => Some(f.await),
        Some(sig) => {
            tokio::select! {
                biased;
                r = f => Some(r),
                _ = sig.draining() => None,
            }
        }
    }
}

/// The order of epoch `epoch` (≥ 1): a permutation of `0..n` from ChaCha8 seeded with
/// `seed + epoch`.
pub(crate) fn epoch_order(n: u64, seed: u64, epoch: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch));
    order.shuffle(&mut rng);
    order
}

/// Feeds `input` to `outlet`: epoch 0 live (re-batched), later epochs from the spool.
///
/// # Errors
/// An upstream error, a spool I/O error, a consumer that went away (channel receiver dropped).
pub(crate) async fn run_feed(
    mut input: BatchStream,
    settings: FeedSettings,
    outlet: Outlet,
    status: Arc<watch::Sender<FeedStatus>>,
    mut shutdown: Option<ShutdownSignal>,
    metrics: Option<Arc<ComponentMetrics>>,
) -> Result<FeedReport> {
    let result = feed_inner(
        &mut input,
        &settings,
        outlet,
        &status,
        &mut shutdown,
        metrics,
    )
    .await;
    status.send_modify(|s| {
        s.stopped = true;
        if s.schema.is_none() {
            s.schema = Some(Arc::new(Schema::empty()));
        }
    });
    result
}

async fn feed_inner(
    input: &mut BatchStream,
    settings: &FeedSettings,
    outlet: Outlet,
    status: &watch::Sender<FeedStatus>,
    shutdown: &mut Option<ShutdownSignal>,
    metrics: Option<Arc<ComponentMetrics>>,
) -> Result<FeedReport> {
    let mut report = FeedReport::default();
    // The first batch reveals the schema (flight info can answer from then on).
    let first = input.next().await.transpose()?;
    let schema = first
        .as_ref()
        .map(|b| b.data.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    status.send_modify(|s| {
        s.training_batches = is_training_batch(&schema);
        s.schema = Some(schema.clone());
    });
    let gone = Arc::new(AtomicBool::new(false));
    let _gone_on_drop = GoneOnDrop(gone.clone());
    let router = match outlet {
        Outlet::Channel(tx) => Some(Router::Channel { tx, gone }),
        Outlet::Ranks(mut rx) => {
            let ready = unless_drained(shutdown, rx.wait_for(|s| s.is_some())).await;
            match ready {
                Some(Ok(senders)) => Some(Router::Ranks(senders.clone().expect("ready"))),
                Some(Err(_)) => return Err(Error::Other("the Flight server stopped".into())),
                None => None,
            }
        }
    };
    let Some(mut router) = router else {
        // Drained before any trainer connected: consume the rest, serve nothing.
        report.drained = true;
        report.batches_not_served += u64::from(first.is_some());
        while let Some(b) = input.next().await {
            b?;
            report.batches_not_served += 1;
        }
        return Ok(report);
    };

    let mut spool = (settings.epochs != Epochs::Count(1))
        .then(|| Spool::new(&settings.spool_dir, &settings.label));
    // Each batch is encoded once, for the Flight streams and the spool alike.
    let encoder = BatchEncoder::new();
    let encode = router.wants_encoded() || spool.is_some();
    let mut rebatcher = Rebatcher::new(settings.batch_size);
    let mut ready = Vec::new();
    let mut seq = 0u64;
    let mut pending = first;
    loop {
        let next = match pending.take() {
            Some(b) => Some(b),
            None => input.next().await.transpose()?,
        };
        let done = next.is_none();
        match next {
            Some(b) => rebatcher.push(b.data, &mut ready)?,
            None => rebatcher.flush(&mut ready)?,
        }
        for rb in ready.drain(..) {
            if report.drained {
                report.batches_not_served += 1;
                continue;
            }
            let rows = rb.num_rows() as u64;
            let encoded = if encode {
                let e = encoder
                    .encode(&rb)
                    .map_err(|e| Error::arrow(format!("encoding batch {seq}"), e))?;
                if let Some(sp) = spool.as_mut() {
                    sp.write(rb.schema_ref(), &encoder, e.clone()).await?;
                }
                Some(e)
            } else {
                None
            };
            let payload = match encoded {
                Some(e) if router.wants_encoded() => Payload::Encoded(e),
                _ => Payload::Decoded(rb),
            };
            match unless_drained(shutdown, router.send(0, seq, seq, payload)).await {
                Some(r) => r?,
                None => {
                    report.drained = true;
                    report.batches_not_served += 1;
                    continue;
                }
            }
            if let Some(m) = &metrics {
                m.rows_out.fetch_add(rows, Ordering::Relaxed);
                m.batches_out.fetch_add(1, Ordering::Relaxed);
            }
            seq += 1;
            status.send_modify(|s| {
                s.batches = seq;
                s.rows += rows;
            });
        }
        if done {
            break;
        }
    }
    report.batches_per_epoch = seq;
    if report.drained || shutdown.as_ref().is_some_and(|s| s.is_draining()) {
        report.drained = true;
        return Ok(report);
    }
    status.send_modify(|s| s.first_pass_complete = true);
    if unless_drained(shutdown, router.end_epoch(0))
        .await
        .is_none()
    {
        report.drained = true;
        return Ok(report);
    }
    report.epochs_routed = 1;
    let Some(mut spool) = spool else {
        return Ok(report);
    };
    report.spool_bytes = Some(spool.finish().await?);
    if seq == 0 {
        if settings.epochs.count().is_none() {
            tracing::warn!(
                "{}: the first pass produced no batch; nothing to serve in later epochs",
                settings.label
            );
        }
        // Empty epochs: mark each one ended so ranks asking for them get an empty epoch.
        let mut e = 1;
        while settings.epochs.includes(e) && settings.epochs.count().is_some() {
            router.end_epoch(e).await?;
            e += 1;
        }
        return Ok(report);
    }
    let mut epoch = 1u64;
    while settings.epochs.includes(epoch) {
        status.send_modify(|s| s.epoch = epoch);
        let order = epoch_order(seq, settings.seed, epoch);
        let how = if router.wants_encoded() {
            ReplayAs::Encoded
        } else {
            ReplayAs::Decoded
        };
        let mut replay = spool.replay(order, how);
        let mut s = 0u64;
        while let Some(r) = replay.recv().await {
            let (index, payload) = r?;
            let rows = payload.rows() as u64;
            match unless_drained(shutdown, router.send(epoch, s, index, payload)).await {
                Some(r) => r?,
                None => {
                    report.drained = true;
                    return Ok(report);
                }
            }
            if let Some(m) = &metrics {
                m.rows_out.fetch_add(rows, Ordering::Relaxed);
                m.batches_out.fetch_add(1, Ordering::Relaxed);
            }
            s += 1;
        }
        if s != seq {
            return Err(Error::Other(format!(
                "spool replay of epoch {epoch} stopped after {s} of {seq} batches"
            )));
        }
        if unless_drained(shutdown, router.end_epoch(epoch))
            .await
            .is_none()
        {
            report.drained = true;
            return Ok(report);
        }
        report.epochs_routed = epoch + 1;
        epoch += 1;
    }
    Ok(report)
}

/// Per-rank batch counts of an epoch of `n` batches split over `world_size` ranks.
pub(crate) fn rank_counts(n: u64, world_size: u32) -> Vec<u64> {
    let w = u64::from(world_size);
    (0..w).map(|r| n / w + u64::from(r < n % w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array};

    fn ids(start: i64, n: i64) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "id",
            Arc::new(Int64Array::from((start..start + n).collect::<Vec<_>>())) as ArrayRef,
        )])
        .unwrap()
    }

    fn marked(b: RecordBatch) -> RecordBatch {
        let mut md = std::collections::HashMap::new();
        md.insert(TRAINING_BATCH_KEY.to_string(), "true".to_string());
        let schema = Arc::new(b.schema().as_ref().clone().with_metadata(md));
        b.with_schema(schema).unwrap()
    }

    #[test]
    fn rebatches_to_exact_sizes_and_keeps_order() {
        let mut r = Rebatcher::new(Some(4));
        let mut out = Vec::new();
        for (s, n) in [(0, 3), (3, 6), (9, 1), (10, 5)] {
            r.push(ids(s, n), &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        let sizes: Vec<usize> = out.iter().map(|b| b.num_rows()).collect();
        assert_eq!(sizes, vec![4, 4, 4, 3]);
        let all: Vec<i64> = out
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(all, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn training_batches_pass_intact() {
        let mut r = Rebatcher::new(Some(4));
        let mut out = Vec::new();
        r.push(marked(ids(0, 7)), &mut out).unwrap();
        r.push(marked(ids(7, 2)), &mut out).unwrap();
        r.flush(&mut out).unwrap();
        assert_eq!(
            out.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
            vec![7, 2]
        );
    }

    #[test]
    fn epoch_orders_are_permutations_and_differ_by_epoch() {
        let a = epoch_order(50, 7, 1);
        let b = epoch_order(50, 7, 2);
        assert_eq!(a, epoch_order(50, 7, 1));
        assert_ne!(a, b);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn rank_counts_cover_the_epoch() {
        assert_eq!(rank_counts(10, 3), vec![4, 3, 3]);
        assert_eq!(rank_counts(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(rank_counts(9, 3).iter().sum::<u64>(), 9);
    }
}
