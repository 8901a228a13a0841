//! The Flight service: tickets, per-rank queues and replay buffers, flight info, auth.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::encoded::{BatchEncoder, Message};
use super::feed::{FeedSettings, FeedStatus, Item, Outlet, Served, rank_counts, run_feed};
use super::{FlightSinkConfig, Prepared};
use crate::error::{Error, Result};
use crate::runtime::metrics::ComponentMetrics;
use crate::runtime::{Ctx, ShutdownSignal};
use crate::stream::BatchStream;

/// A `DoGet` ticket (JSON): which rank of which world asks for which epoch, and optionally
/// where to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// This trainer's rank, `0 <= rank < world_size`.
    pub rank: u32,
    /// Number of trainer ranks.
    pub world_size: u32,
    /// The epoch asked for, from 0.
    pub epoch: u64,
    /// Resume after the batch with this `seq` (of this epoch), the last one received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
}

impl Ticket {
    /// Parses a ticket.
    ///
    /// # Errors
    /// A message saying what is malformed and what a ticket looks like.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Ticket, String> {
        serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "malformed ticket `{}`: {e}; expected JSON like {{\"rank\": 0, \"world_size\": 2, \"epoch\": 0}} with an optional \"after\": <seq of the last batch received>",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            )
        })
    }
}

/// A batch sent to a rank, kept for resuming.
struct Sent {
    /// Position in everything sent to this rank.
    n: u64,
    tb: Served,
}

/// One rank's state.
#[derive(Default)]
struct Slot {
    /// The queue, while no stream holds it.
    rx: Option<mpsc::Receiver<Item>>,
    /// An item taken from the queue but not sent.
    peeked: Option<Item>,
    /// The peer currently served, if any.
    active: Option<String>,
    /// The last `replay_buffer` batches sent.
    history: VecDeque<Sent>,
    /// Batches taken from the queue so far.
    sent: u64,
    /// The epoch the rank is in (number of epoch ends it has consumed).
    epoch: u64,
    /// For recent epochs, the position `n` of the rank's first batch.
    epoch_first: BTreeMap<u64, u64>,
    /// Whether the rank received its last epoch completely.
    finished: bool,
}

struct Inner {
    world_size: Option<u32>,
    fixed_by: String,
    slots: Vec<Slot>,
}

/// State shared by the service and the sink.
pub(crate) struct Shared {
    name: String,
    cfg: FlightSinkConfig,
    status: Arc<watch::Sender<FeedStatus>>,
    inner: Mutex<Inner>,
    senders: watch::Sender<Option<Vec<mpsc::Sender<Item>>>>,
    finished: watch::Sender<u32>,
    shutdown: ShutdownSignal,
    metrics: Arc<ComponentMetrics>,
    /// Why the feed failed, when it did: open streams end with this error.
    failure: Mutex<Option<String>>,
}

impl Shared {
    /// Fixes the world size (first ticket or configuration) and creates the rank queues.
    fn fix_world_size(&self, inner: &mut Inner, ws: u32, by: String) {
        let mut senders = Vec::with_capacity(ws as usize);
        for _ in 0..ws {
            let (tx, rx) = mpsc::channel(self.cfg.max_buffered_batches);
            senders.push(tx);
            inner.slots.push(Slot {
                rx: Some(rx),
                ..Default::default()
            });
        }
        inner.world_size = Some(ws);
        inner.fixed_by = by;
        self.senders.send_replace(Some(senders));
        self.metrics.set_detail("world_size", ws);
    }

    /// The status of a stream cut short because the pipeline failed or was cancelled.
    fn stopped_status(&self, epoch: u64) -> Status {
        let why = self.failure.lock().expect("flight state").clone();
        Status::aborted(format!(
            "the pipeline stopped before epoch {epoch} was complete: {}",
            why.as_deref().unwrap_or("it failed or was cancelled")
        ))
    }

    fn check_auth<T>(&self, req: &Request<T>) -> std::result::Result<(), Status> {
        let Some(token) = &self.cfg.token else {
            return Ok(());
        };
        let got = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match got {
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "wrong token in the `authorization: Bearer <token>` header",
            )),
            None => Err(Status::unauthenticated(
                "this server needs a token: send the header `authorization: Bearer <token>`",
            )),
        }
    }

    fn flight_info(&self, world_size: Option<u32>, epoch: u64) -> FlightInfo {
        let st = self.status.borrow().clone();
        let (fixed_ws, served): (Option<u32>, Vec<u64>) = {
            let inner = self.inner.lock().expect("flight state");
            (
                inner.world_size,
                inner.slots.iter().map(|s| s.sent).collect(),
            )
        };
        let ws = world_size.or(fixed_ws);
        let per_epoch = st.first_pass_complete.then_some(st.batches);
        let meta = serde_json::json!({
            "sink": self.name,
            "epochs": self.cfg.epochs.count(),
            "batch_size": self.cfg.batch_size,
            "training_batches": st.training_batches,
            "world_size": fixed_ws,
            "batches_per_epoch": per_epoch,
            "rows_per_epoch": st.first_pass_complete.then_some(st.rows),
            "batches_so_far": st.batches,
            "first_pass_complete": st.first_pass_complete,
            "epoch_routing": st.epoch,
            "rank_batches": match (per_epoch, ws) {
                (Some(n), Some(w)) => Some(rank_counts(n, w)),
                _ => None,
            },
            "batches_sent_per_rank": served,
            "max_buffered_batches": self.cfg.max_buffered_batches,
            "replay_buffer": self.cfg.replay_buffer,
        });
        let schema = st.schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        let mut info = FlightInfo::new()
            .try_with_schema(&schema)
            .expect("schema encodes")
            .with_descriptor(FlightDescriptor::new_path(vec![self.name.clone()]))
            .with_total_records(if st.first_pass_complete {
                st.rows as i64
            } else {
                -1
            })
            .with_total_bytes(-1)
            .with_ordered(true)
            .with_app_metadata(meta.to_string());
        if let Some(ws) = ws {
            for rank in 0..ws {
                let t = Ticket {
                    rank,
                    world_size: ws,
                    epoch,
                    after: None,
                };
                info = info.with_endpoint(FlightEndpoint::new().with_ticket(
                    arrow_flight::Ticket::new(serde_json::to_vec(&t).expect("ticket")),
                ));
            }
        }
        info
    }

    /// Validates a ticket, claims the rank and computes what to replay.
    fn open(
        self: &Arc<Self>,
        t: Ticket,
        peer: String,
    ) -> std::result::Result<(Lease, Vec<Served>, bool), Status> {
        if t.world_size == 0 {
            return Err(Status::invalid_argument("world_size must be at least 1"));
        }
        if t.rank >= t.world_size {
            return Err(Status::invalid_argument(format!(
                "rank {} is outside a world of size {} (ranks are 0..{})",
                t.rank,
                t.world_size,
                t.world_size - 1
            )));
        }
        if !self.cfg.epochs.includes(t.epoch) {
            return Err(Status::invalid_argument(format!(
                "epoch {} is not served: this server serves {} epoch(s), 0..{}",
                t.epoch,
                self.cfg.epochs.count().unwrap_or(0),
                self.cfg.epochs.count().unwrap_or(1) - 1
            )));
        }
        let mut inner = self.inner.lock().expect("flight state");
        match inner.world_size {
            None => self.fix_world_size(
                &mut inner,
                t.world_size,
                format!("the first ticket (from {peer})"),
            ),
            Some(ws) if ws != t.world_size => {
                return Err(Status::invalid_argument(format!(
                    "world_size {} does not match this run's world size {ws} (fixed by {})",
                    t.world_size, inner.fixed_by
                )));
            }
            Some(_) => {}
        }
        let ws = u64::from(t.world_size);
        let replay_buffer = self.cfg.replay_buffer;
        let slot = &mut inner.slots[t.rank as usize];
        if let Some(other) = &slot.active {
            return Err(Status::already_exists(format!(
                "rank {} is already being served to {other}; one client per rank (a client resuming after a disconnect may retry once the server has noticed the old connection closed)",
                t.rank
            )));
        }
        let cur = slot.epoch;
        if t.epoch > cur + 1 {
            return Err(Status::failed_precondition(format!(
                "rank {} is in epoch {cur}; ask for epoch {cur} (or {}) first",
                t.rank,
                cur + 1
            )));
        }
        let start = match t.after {
            Some(after) => {
                if after % ws != u64::from(t.rank) {
                    return Err(Status::invalid_argument(format!(
                        "batch seq {after} belongs to rank {} in a world of {ws}, not to rank {}",
                        after % ws,
                        t.rank
                    )));
                }
                match slot
                    .history
                    .iter()
                    .find(|s| s.tb.epoch == t.epoch && s.tb.seq == after)
                {
                    Some(s) => s.n + 1,
                    None => {
                        let older = slot
                            .history
                            .front()
                            .is_some_and(|f| (t.epoch, after) < (f.tb.epoch, f.tb.seq))
                            || (slot.history.is_empty() && slot.sent > 0 && t.epoch <= cur);
                        return Err(if older {
                            Status::out_of_range(format!(
                                "cannot resume rank {} after seq {after} of epoch {}: that batch is no longer in the replay buffer (it keeps the last {replay_buffer} batches per rank; raise `replay_buffer`)",
                                t.rank, t.epoch
                            ))
                        } else {
                            Status::invalid_argument(format!(
                                "cannot resume rank {} after seq {after} of epoch {}: that batch was never sent to this rank",
                                t.rank, t.epoch
                            ))
                        });
                    }
                }
            }
            None => match slot.epoch_first.get(&t.epoch) {
                Some(&first) => {
                    if slot.history.front().is_none_or(|f| f.n > first) {
                        return Err(Status::out_of_range(format!(
                            "rank {} already received batches of epoch {} beyond the replay buffer (it keeps the last {replay_buffer}); resume with \"after\": <seq of the last batch received>",
                            t.rank, t.epoch
                        )));
                    }
                    first
                }
                None if t.epoch < cur && slot.sent > 0 && !slot.epoch_first.is_empty() => {
                    // The rank had no batch in that epoch, or the epoch is long gone.
                    let oldest = *slot.epoch_first.keys().next().expect("non-empty");
                    if t.epoch < oldest {
                        return Err(Status::out_of_range(format!(
                            "epoch {} was already served to rank {} and is no longer in the replay buffer",
                            t.epoch, t.rank
                        )));
                    }
                    slot.sent
                }
                None => slot.sent,
            },
        };
        let replay: Vec<Served> = slot
            .history
            .iter()
            .filter(|s| s.n >= start && s.tb.epoch == t.epoch)
            .map(|s| s.tb.clone())
            .collect();
        let ends_after_replay = t.epoch < cur;
        slot.active = Some(peer.clone());
        let rx = slot.rx.take();
        let peeked = slot.peeked.take();
        drop(inner);
        Ok((
            Lease {
                shared: self.clone(),
                rank: t.rank,
                epoch: t.epoch,
                peer,
                rx,
                peeked,
                completed: false,
                last_seq: t.after,
            },
            replay,
            ends_after_replay,
        ))
    }

    /// Records that a batch was taken from rank `rank`'s queue and is being sent.
    fn record_sent(&self, rank: u32, tb: &Served) {
        let mut inner = self.inner.lock().expect("flight state");
        let keep = self.cfg.replay_buffer;
        let slot = &mut inner.slots[rank as usize];
        let n = slot.sent;
        slot.sent += 1;
        slot.epoch_first.entry(tb.epoch).or_insert(n);
        if keep > 0 {
            slot.history.push_back(Sent { n, tb: tb.clone() });
            while slot.history.len() > keep {
                slot.history.pop_front();
            }
        }
        // Forget the first positions of epochs older than what the history still holds.
        if let Some(front) = slot.history.front().map(|f| f.tb.epoch) {
            slot.epoch_first.retain(|e, _| *e + 1 >= front);
        }
    }

    /// Records that rank `rank` consumed the end of `epoch`.
    fn record_epoch_end(&self, rank: u32, epoch: u64) {
        let mut inner = self.inner.lock().expect("flight state");
        let slot = &mut inner.slots[rank as usize];
        slot.epoch = epoch + 1;
        if self.cfg.epochs.is_last(epoch) && !slot.finished {
            slot.finished = true;
            self.finished.send_modify(|n| *n += 1);
        }
    }

    fn record_closed(&self, rank: u32) {
        let mut inner = self.inner.lock().expect("flight state");
        let slot = &mut inner.slots[rank as usize];
        if !slot.finished {
            slot.finished = true;
            self.finished.send_modify(|n| *n += 1);
        }
    }
}

/// How long the server waits, once every rank is served, for clients to close their
/// connections before it closes them.
const LINGER: Duration = Duration::from_secs(1);

/// A client connection, counted while open.
struct Tracked {
    io: tokio::net::TcpStream,
    open: Arc<watch::Sender<usize>>,
}

impl Tracked {
    fn new(io: tokio::net::TcpStream, open: Arc<watch::Sender<usize>>) -> Tracked {
        open.send_modify(|n| *n += 1);
        Tracked { io, open }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.open.send_modify(|n| *n -= 1);
    }
}

impl tonic::transport::server::Connected for Tracked {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A claimed rank: gives the queue back and frees the rank when dropped (stream ended or client
/// gone).
struct Lease {
    shared: Arc<Shared>,
    rank: u32,
    epoch: u64,
    peer: String,
    rx: Option<mpsc::Receiver<Item>>,
    peeked: Option<Item>,
    completed: bool,
    last_seq: Option<u64>,
}

impl Lease {
    /// The stream ended as intended (not a disconnect).
    fn complete(&mut self) {
        self.completed = true;
    }

    /// Keeps an item taken from the queue for the next stream of this rank.
    fn put_back(&mut self, item: Item) {
        self.peeked = Some(item);
    }

    /// Remembers the last batch handed to the transport.
    fn sent(&mut self, seq: u64) {
        self.last_seq = Some(seq);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.completed && !self.shared.shutdown.is_draining() {
            tracing::warn!(
                "flight sink `{}`: rank {} ({}) disconnected during epoch {}{}; it can resume with a ticket naming \"after\"",
                self.shared.name,
                self.rank,
                self.peer,
                self.epoch,
                match self.last_seq {
                    Some(s) => format!(" after batch seq {s}"),
                    None => " before receiving a batch".into(),
                }
            );
        }
        if let Ok(mut inner) = self.shared.inner.lock() {
            let slot = &mut inner.slots[self.rank as usize];
            slot.active = None;
            if slot.rx.is_none() {
                slot.rx = self.rx.take();
            }
            if slot.peeked.is_none() {
                slot.peeked = self.peeked.take();
            }
        }
    }
}

/// The end marker: a batch of zero rows (which every Flight client decodes) whose metadata is
/// `{"end": kind, "epoch": e, "rank": r}`; the messages to yield.
fn end_marker(
    schema: &Arc<Schema>,
    kind: &str,
    epoch: u64,
    rank: u32,
) -> Vec<std::result::Result<Message, Status>> {
    let empty = arrow::record_batch::RecordBatch::new_empty(schema.clone());
    match BatchEncoder::new().encode(&empty) {
        Ok(enc) => {
            let meta = serde_json::json!({"end": kind, "epoch": epoch, "rank": rank});
            enc.to_send(meta.to_string().into())
                .into_iter()
                .map(Ok)
                .collect()
        }
        Err(e) => vec![Err(Status::internal(format!(
            "encoding the end marker: {e}"
        )))],
    }
}

type FlightStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// The service handed to tonic.
#[derive(Clone)]
pub(crate) struct Service(Arc<Shared>);

/// The messages of a `DoGet` stream.
pub(crate) type MessageStream = FlightStream<Message>;

impl Service {
    async fn schema(&self) -> Arc<Schema> {
        let mut rx = self.0.status.subscribe();
        let st = rx.wait_for(|s| s.schema.is_some()).await;
        st.ok()
            .and_then(|s| s.schema.clone())
            .unwrap_or_else(|| Arc::new(Schema::empty()))
    }

    /// The `DoGet` stream for a ticket: the schema, then the rank's batches of the epoch (a
    /// replay first when resuming), then the end marker; or why the ticket is refused.
    pub(crate) async fn messages(
        &self,
        req: Request<arrow_flight::Ticket>,
    ) -> std::result::Result<MessageStream, Status> {
        self.0.check_auth(&req)?;
        let peer = req
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "an unknown peer".into());
        let t = Ticket::parse(&req.get_ref().ticket).map_err(Status::invalid_argument)?;
        let (mut lease, replay, ends_after_replay) = self.0.open(t, peer)?;
        let schema = self.schema().await;
        let shared = self.0.clone();
        let mut shutdown = shared.shutdown.clone();
        let epoch = t.epoch;
        let rank = t.rank;
        let stream = async_stream::stream! {
            yield Ok(BatchEncoder::new().schema(&schema));
            for tb in replay {
                lease.sent(tb.seq);
                for m in tb.messages() {
                    yield Ok(m);
                }
            }
            if ends_after_replay {
                lease.complete();
                for m in end_marker(&schema, "epoch", epoch, rank) { yield m; }
                return;
            }
            loop {
                let item = match lease.peeked.take() {
                    Some(i) => Some(i),
                    None => {
                        let Some(rx) = lease.rx.as_mut() else {
                            lease.complete();
                            yield Err(Status::internal("the rank's queue is missing"));
                            return;
                        };
                        tokio::select! {
                            biased;
                            _ = shutdown.draining() => {
                                lease.complete();
                                if shared.shutdown.is_draining() {
                                    for m in end_marker(&schema, "shutdown", epoch, rank) { yield m; }
                                } else {
                                    // The run ended without a drain request: it failed or was
                                    // cancelled.
                                    yield Err(shared.stopped_status(epoch));
                                }
                                return;
                            }
                            i = rx.recv() => i,
                        }
                    }
                };
                match item {
                    None => {
                        // The feed stopped: all epochs routed, drained, or failed.
                        lease.complete();
                        if shared.failure.lock().expect("flight state").is_some() {
                            yield Err(shared.stopped_status(epoch));
                            return;
                        }
                        shared.record_closed(rank);
                        let kind = if shared.shutdown.is_draining() { "shutdown" } else { "epoch" };
                        for m in end_marker(&schema, kind, epoch, rank) { yield m; }
                        return;
                    }
                    Some(Item::EpochEnd { epoch: e }) => {
                        shared.record_epoch_end(rank, e);
                        if e >= epoch {
                            lease.complete();
                            for m in end_marker(&schema, "epoch", epoch, rank) { yield m; }
                            return;
                        }
                    }
                    Some(Item::Batch(tb)) => {
                        if tb.epoch < epoch {
                            let msg = format!(
                                "rank {rank} has not received all of epoch {} yet (next: batch seq {}); finish or resume that epoch first",
                                tb.epoch, tb.seq
                            );
                            lease.put_back(Item::Batch(tb));
                            lease.complete();
                            yield Err(Status::failed_precondition(msg));
                            return;
                        }
                        shared.record_sent(rank, &tb);
                        lease.sent(tb.seq);
                        for m in tb.messages() {
                            yield Ok(m);
                        }
                    }
                }
            }
        };
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    async fn handshake(
        &self,
        req: Request<Streaming<HandshakeRequest>>,
    ) -> std::result::Result<Response<Self::HandshakeStream>, Status> {
        self.0.check_auth(&req)?;
        let out = futures::stream::iter(vec![Ok(HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        })]);
        Ok(Response::new(Box::pin(out)))
    }

    async fn list_flights(
        &self,
        req: Request<Criteria>,
    ) -> std::result::Result<Response<Self::ListFlightsStream>, Status> {
        self.0.check_auth(&req)?;
        self.schema().await;
        let info = self.0.flight_info(None, 0);
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(
            info,
        )]))))
    }

    async fn get_flight_info(
        &self,
        req: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<FlightInfo>, Status> {
        self.0.check_auth(&req)?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Query {
            #[serde(default)]
            world_size: Option<u32>,
            #[serde(default)]
            epoch: u64,
        }
        let d = req.into_inner();
        let q = if d.cmd.is_empty() {
            Query {
                world_size: None,
                epoch: 0,
            }
        } else {
            serde_json::from_slice::<Query>(&d.cmd).map_err(|e| {
                Status::invalid_argument(format!(
                    "malformed descriptor command: {e}; expected JSON like {{\"world_size\": 2, \"epoch\": 0}}"
                ))
            })?
        };
        if q.world_size == Some(0) {
            return Err(Status::invalid_argument("world_size must be at least 1"));
        }
        self.schema().await;
        Ok(Response::new(self.0.flight_info(q.world_size, q.epoch)))
    }

    async fn poll_flight_info(
        &self,
        _req: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        req: Request<FlightDescriptor>,
    ) -> std::result::Result<Response<SchemaResult>, Status> {
        self.0.check_auth(&req)?;
        let schema = self.schema().await;
        let r = SchemaResult::try_from(SchemaAsIpc::new(&schema, &IpcWriteOptions::default()))
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(r))
    }

    /// `DoGet` through tonic's encoder (the server answers `DoGet` with [`Service::messages`]
    /// directly; this serves the same stream to any other caller of the trait).
    async fn do_get(
        &self,
        req: Request<arrow_flight::Ticket>,
    ) -> std::result::Result<Response<Self::DoGetStream>, Status> {
        let s = self.messages(req).await?;
        Ok(Response::new(Box::pin(
            s.map(|m| m.map(|m| m.to_flight_data())),
        )))
    }

    async fn do_put(
        &self,
        _req: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "this server only serves batches (DoGet)",
        ))
    }

    async fn do_exchange(
        &self,
        _req: Request<Streaming<FlightData>>,
    ) -> std::result::Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "this server only serves batches (DoGet)",
        ))
    }

    async fn do_action(
        &self,
        _req: Request<Action>,
    ) -> std::result::Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("no actions"))
    }

    async fn list_actions(
        &self,
        req: Request<Empty>,
    ) -> std::result::Result<Response<Self::ListActionsStream>, Status> {
        self.0.check_auth(&req)?;
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
}

/// Runs the server and the feed until every rank received every epoch, or a drain request.
pub(crate) async fn serve(
    p: Prepared,
    input: BatchStream,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<()> {
    let Prepared {
        cfg,
        listener,
        addr,
    } = p;
    let name = metrics.name.clone();
    let status = Arc::new(watch::channel(FeedStatus::default()).0);
    let (senders, senders_rx) = watch::channel(None);
    let (finished, mut finished_rx) = watch::channel(0u32);
    let shared = Arc::new(Shared {
        name: name.clone(),
        cfg: cfg.clone(),
        status: status.clone(),
        inner: Mutex::new(Inner {
            world_size: None,
            fixed_by: String::new(),
            slots: Vec::new(),
        }),
        senders,
        finished,
        shutdown: ctx.shutdown.clone(),
        metrics: metrics.clone(),
        failure: Mutex::new(None),
    });
    if let Some(ws) = cfg.world_size {
        let mut inner = shared.inner.lock().expect("flight state");
        shared.fix_world_size(&mut inner, ws, "the configuration (`world_size`)".into());
    }

    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::Other(format!("listening on {addr}: {e}")))?;
    let open = Arc::new(watch::channel(0usize).0);
    let counter = open.clone();
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |r| r.map(|io| Tracked::new(io, counter.clone())));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let svc = super::direct::Direct::new(Service(shared.clone()));
    let server = crate::runtime::spawn::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    tracing::info!(
        "flight sink `{name}`: serving on {addr} ({} epoch(s), {})",
        cfg.epochs
            .count()
            .map_or("unbounded".to_string(), |n| n.to_string()),
        if cfg.token.is_some() {
            "token required"
        } else {
            "no token"
        }
    );
    metrics.set_detail("address", addr.to_string());

    let settings = FeedSettings {
        batch_size: Some(cfg.batch_size),
        epochs: cfg.epochs,
        seed: ctx.seed,
        spool_dir: cfg.effective_spool_dir(),
        label: name.clone(),
    };
    let report = run_feed(
        input,
        settings,
        Outlet::Ranks(senders_rx),
        status.clone(),
        Some(ctx.shutdown.clone()),
        Some(metrics.clone()),
    )
    .await;
    // Close the queues: streams deliver what is queued, then end (with an error when the
    // pipeline failed).
    if let Err(e) = &report {
        *shared.failure.lock().expect("flight state") = Some(e.to_string());
    }
    shared.senders.send_replace(None);
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let _ = stop_tx.send(());
            return Err(e);
        }
    };
    metrics.set_detail("batches_per_epoch", report.batches_per_epoch);
    metrics.set_detail("epochs_routed", report.epochs_routed);
    if let Some(b) = report.spool_bytes {
        metrics.set_detail("spool_bytes", b);
    }
    if report.batches_not_served > 0 {
        metrics.set_detail("batches_not_served", report.batches_not_served);
        tracing::warn!(
            "flight sink `{name}`: stopped by a drain request; {} batch(es) were not served",
            report.batches_not_served
        );
    }

    // Serve until every rank has everything (or a drain request).
    let mut shutdown = ctx.shutdown.clone();
    if !report.drained {
        let ws = shared.inner.lock().expect("flight state").world_size;
        if let Some(ws) = ws {
            tokio::select! {
                _ = finished_rx.wait_for(|n| *n >= ws) => {}
                _ = shutdown.draining() => {}
            }
        }
    }
    // Let clients finish reading before the server closes: a stream's last messages may
    // still sit in the transport's buffers, waiting for the client's flow-control window,
    // after the stream itself has ended, and closing the connection then resets it. Wait until
    // every client connection has closed, at most `LINGER`.
    let mut open_rx = open.subscribe();
    let _ = tokio::time::timeout(LINGER, open_rx.wait_for(|n| *n == 0)).await;
    let _ = stop_tx.send(());
    // Streams end at once on a drain request; give connections a moment to close.
    let grace = tokio::time::timeout(Duration::from_secs(5), server.join()).await;
    match grace {
        Ok(Some(Err(e))) => Err(Error::Other(format!("Flight server on {addr}: {e}"))),
        _ => {
            let served: Vec<u64> = shared
                .inner
                .lock()
                .expect("flight state")
                .slots
                .iter()
                .map(|s| s.sent)
                .collect();
            metrics.set_detail("batches_sent_per_rank", served);
            Ok(())
        }
    }
}
