//! `type: flight` — serves training batches to trainer processes over Arrow Flight.
//!
//! A trainer rank calls `DoGet` with a JSON ticket `{"rank": 0, "world_size": 2, "epoch": 0}`
//! and receives the Arrow schema, then its part of the epoch: batch `seq` of the epoch goes to
//! rank `seq % world_size`, so ranks get disjoint, deterministic parts whose union is the epoch,
//! each batch exactly once (with `n` batches, ranks `0 .. n % world_size` get one batch more
//! than the others). Every batch message carries `app_metadata` JSON
//! `{"epoch": e, "seq": s, "index": i, "rows": r}`: `seq` is the batch's position in the
//! epoch, `index` its position in the first pass (the same batch has the same `index` in every
//! epoch). The stream ends with a metadata-only message `{"end": "epoch", ...}` when the rank's
//! part of the epoch is complete, or `{"end": "shutdown", ...}` when the server stopped first.
//!
//! # Batches
//! Input batches whose schema carries the metadata `tripline.training_batch = "true"` (what the
//! `mine` stage emits: one record batch per training batch) are served intact, never split or
//! merged. Any other input is re-batched to `batch_size` rows (the last batch of the first pass
//! may be shorter).
//!
//! # Epochs
//! Epoch 0 is served live, in pipeline order, while the pipeline runs. When more than one epoch
//! is asked for, the first pass is also spooled to an Arrow IPC stream file in `spool_dir`
//! (removed when the sink ends) and every later epoch replays it in a new order: a permutation
//! of the batches drawn from ChaCha8 seeded with `seed + epoch`. Replaying a spool, rather
//! than re-running the pipeline, keeps the expensive stages (embedding, mining) to one pass,
//! keeps memory bounded by the batch, and makes every epoch hold exactly the same batches.
//!
//! Each batch is encoded to its Flight messages once, when it is routed; the live stream, the
//! replay buffer and the spool share those bytes, and a replay serves the spooled bytes as
//! they are, without decoding or re-encoding them.
//!
//! # Flow control
//! Each rank has a queue of `max_buffered_batches`; the sink waits when the queue of the rank
//! whose turn it is is full, so the slowest rank paces the pipeline (as synchronous data
//! parallel training does anyway) and a pipeline faster than its trainers slows down instead of
//! buffering. Until the first trainer connects (fixing the world size, unless `world_size` is
//! configured), nothing is routed and the pipeline waits.
//!
//! # Resume
//! The last `replay_buffer` batches sent to each rank are kept. A ticket with
//! `"after": s` (the `seq` of the last batch received) continues right after it, without loss
//! or duplication; a ticket without `after` for an epoch the rank has started replays that
//! epoch from its beginning. When the batches needed are no longer kept, the ticket is refused
//! with an error saying so.
//!
//! # Faults
//! A malformed ticket, a rank outside the world, a world size different from the one being
//! served, a second client claiming a rank that is being served, and a missing or wrong token
//! are refused with a gRPC status naming the problem; the server keeps serving the other
//! ranks. A port already in use is reported when the sink is prepared, before anything runs.

mod direct;
mod encoded;
mod feed;
mod server;
mod spool;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

pub(crate) use feed::{FeedSettings, Outlet, run_feed};
pub use feed::{TRAINING_BATCH_KEY, is_training_batch};
pub use server::Ticket;

/// How many epochs to serve: a number, or `unbounded` (until the server is stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Epochs {
    /// This many epochs (at least 1).
    Count(u64),
    /// Epoch after epoch until the server is stopped (Ctrl-C).
    Unbounded(Unbounded),
}

/// The literal `unbounded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unbounded {
    /// No limit on the number of epochs.
    Unbounded,
}

impl<'de> Deserialize<'de> for Epochs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "a number of epochs (at least 1) or `unbounded`";
        impl serde::de::Visitor<'_> for V {
            type Value = Epochs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Epochs, E> {
                Ok(Epochs::Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Epochs, E> {
                u64::try_from(v)
                    .map(Epochs::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &EXPECTED))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Epochs, E> {
                match v {
                    "unbounded" => Ok(Epochs::Unbounded(Unbounded::Unbounded)),
                    other => other.parse::<u64>().map(Epochs::Count).map_err(|_| {
                        E::invalid_value(serde::de::Unexpected::Str(other), &EXPECTED)
                    }),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Epochs {
    /// Whether epoch `e` (from 0) is served.
    pub fn includes(self, e: u64) -> bool {
        match self {
            Epochs::Count(n) => e < n,
            Epochs::Unbounded(_) => true,
        }
    }

    /// Whether epoch `e` is the last one served.
    pub fn is_last(self, e: u64) -> bool {
        matches!(self, Epochs::Count(n) if e + 1 == n)
    }

    /// The number of epochs, `None` when unbounded.
    pub fn count(self) -> Option<u64> {
        match self {
            Epochs::Count(n) => Some(n),
            Epochs::Unbounded(_) => None,
        }
    }
}

impl Default for Epochs {
    fn default() -> Self {
        Epochs::Count(1)
    }
}

/// Settings of a `flight` sink.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlightSinkConfig {
    /// Upstream components whose output is served.
    pub inputs: Vec<String>,
    /// `IP:port` the Flight server listens on. Port 0 picks a free port (logged at start).
    /// Anything but a loopback address needs `token` or `allow_unauthenticated: true`.
    #[serde(default = "default_address")]
    pub address: String,
    /// Rows per served batch. Input marked as training batches (schema metadata
    /// `tripline.training_batch = "true"`, as the `mine` stage emits) is served intact instead.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Epochs to serve: a number, or `unbounded` (until Ctrl-C). Epoch 0 is served live in
    /// pipeline order; later epochs replay the spooled first pass in an order shuffled by
    /// `seed + epoch`.
    #[serde(default)]
    pub epochs: Epochs,
    /// Number of trainer ranks. Default: fixed by the first ticket received; tickets naming
    /// another world size are refused.
    #[serde(default)]
    pub world_size: Option<u32>,
    /// Batches queued per rank, at most. When the queue of the rank whose turn it is is full,
    /// the pipeline waits.
    #[serde(default = "default_max_buffered_batches")]
    pub max_buffered_batches: usize,
    /// Batches already sent that are kept per rank so that a reconnecting rank can resume
    /// (ticket `after`) without loss or duplication. Batches sent but not yet read by the
    /// trainer sit in the transport's buffers (HTTP/2 send buffer and flow-control window:
    /// from a few hundred KB to a few MB), so keep `replay_buffer × batch bytes` above that.
    /// 0 disables resuming.
    #[serde(default = "default_replay_buffer")]
    pub replay_buffer: usize,
    /// Directory for the spool file holding the first pass when more than one epoch is
    /// served (an Arrow IPC file about the size of the epoch, removed when the sink ends).
    /// Default: the system temporary directory.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Shared secret: every call must carry the header `authorization: Bearer <token>`.
    /// Write `token: ${TRIPLINE_TOKEN}` to take it from the environment.
    #[serde(default)]
    pub token: Option<String>,
    /// Allow listening on a non-loopback address without a token.
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

fn default_address() -> String {
    "127.0.0.1:50051".into()
}

fn default_batch_size() -> usize {
    256
}

fn default_max_buffered_batches() -> usize {
    8
}

fn default_replay_buffer() -> usize {
    64
}

impl FlightSinkConfig {
    /// The spool directory after defaults.
    pub fn effective_spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// Checks settings against the input schema.
///
/// # Errors
/// Every problem found: an address that is not `IP:port`, a non-loopback address without a
/// token or the explicit opt-out, zero sizes or epochs, an empty token.
pub fn check(
    cfg: &FlightSinkConfig,
    _input: &SchemaRef,
) -> std::result::Result<(), Vec<PlanProblem>> {
    let mut p: Vec<PlanProblem> = Vec::new();
    let key = |k: &str| vec![k.to_string()];
    match cfg.address.parse::<SocketAddr>() {
        Ok(addr) => {
            if !addr.ip().is_loopback() && cfg.token.is_none() && !cfg.allow_unauthenticated {
                p.push((
                    key("address"),
                    format!(
                        "`{}` is reachable from other machines: set `token` (e.g. `token: ${{TRIPLINE_TOKEN}}`) or `allow_unauthenticated: true`, or listen on 127.0.0.1",
                        cfg.address
                    ),
                ));
            }
        }
        Err(_) => p.push((
            key("address"),
            format!(
                "`{}` is not an `IP:port` address; expected e.g. `127.0.0.1:50051` or `0.0.0.0:50051`",
                cfg.address
            ),
        )),
    }
    if cfg.batch_size == 0 {
        p.push((key("batch_size"), "must be at least 1".into()));
    }
    if cfg.max_buffered_batches == 0 {
        p.push((key("max_buffered_batches"), "must be at least 1".into()));
    }
    if cfg.epochs == Epochs::Count(0) {
        p.push((key("epochs"), "must be at least 1 (or `unbounded`)".into()));
    }
    if cfg.world_size == Some(0) {
        p.push((key("world_size"), "must be at least 1".into()));
    }
    if cfg.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        p.push((
            key("token"),
            "the token is empty (is the environment variable set?); remove `token` to disable auth"
                .into(),
        ));
    }
    if p.is_empty() { Ok(()) } else { Err(p) }
}

/// A prepared Flight sink: its port is bound, so a port in use is reported before the
/// pipeline runs.
#[derive(Debug)]
pub struct Prepared {
    cfg: FlightSinkConfig,
    listener: TcpListener,
    addr: SocketAddr,
}

impl Prepared {
    /// The address actually bound (the chosen port when the configuration says port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds the listening socket and checks the spool directory.
///
/// # Errors
/// When the address cannot be bound (in use, not local, no permission) or the spool directory
/// cannot be created.
pub fn prepare(cfg: &FlightSinkConfig, _ctx: &Ctx) -> Result<Prepared> {
    let addr: SocketAddr = cfg
        .address
        .parse()
        .map_err(|_| Error::Other(format!("`{}` is not an `IP:port` address", cfg.address)))?;
    let listener = TcpListener::bind(addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "the address is already in use (another server is listening there; choose another port, e.g. `--set sinks.<name>.address=127.0.0.1:0`)".to_string()
            }
            _ => e.to_string(),
        };
        Error::Other(format!("cannot listen on {addr}: {why}"))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Other(format!("configuring the socket on {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Other(format!("reading the bound address of {addr}: {e}")))?;
    if cfg.epochs != Epochs::Count(1) {
        let dir = cfg.effective_spool_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating spool directory", &dir, e))?;
    }
    Ok(Prepared {
        cfg: cfg.clone(),
        listener,
        addr,
    })
}

/// Serves the input until every rank has received every epoch, or until a drain request
/// (Ctrl-C) ends the streams.
///
/// # Errors
/// An upstream failure, a spool I/O error, or a server failure.
pub async fn run(
    p: Prepared,
    input: BatchStream,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<()> {
    server::serve(p, input, ctx, metrics).await
}
