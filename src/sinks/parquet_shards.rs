//! `type: parquet_shards` — rolling Parquet shards and a manifest written last.
//!
//! # Crash safety
//! Each shard is written as `.part-NNNNN.parquet.tmp`, flushed to disk, then renamed to
//! `part-NNNNN.parquet`. `manifest.json` is written (to a temporary name, then renamed) only
//! after every shard it names is complete, and never when the pipeline failed. A killed run
//! therefore leaves either no manifest or a manifest whose shards are all complete; a
//! temporary file never looks like a finished shard. Overwriting removes the old manifest
//! first, so an old manifest never points at new shards.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

use super::manifest::{FORMAT, MANIFEST, Manifest, ShardEntry, schema_entries};
use crate::config::{Codec, ParquetShardsSinkConfig};
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// Checks settings.
///
/// # Errors
/// Every problem found.
pub fn check(
    cfg: &ParquetShardsSinkConfig,
    _input: &SchemaRef,
) -> std::result::Result<(), Vec<PlanProblem>> {
    let mut p = Vec::new();
    if cfg.rows_per_shard == Some(0) {
        p.push((vec!["rows_per_shard".into()], "must be at least 1".into()));
    }
    if cfg.max_shard_bytes == Some(0) {
        p.push((vec!["max_shard_bytes".into()], "must be at least 1".into()));
    }
    if cfg.row_group_bytes == 0 {
        p.push((vec!["row_group_bytes".into()], "must be at least 1".into()));
    }
    if cfg.row_group_rows == 0 {
        p.push((vec!["row_group_rows".into()], "must be at least 1".into()));
    }
    if let Err(e) = compression(cfg) {
        p.push((vec!["compression_level".into()], e));
    }
    if cfg.path.as_os_str().is_empty() {
        p.push((vec!["path".into()], "must name an output directory".into()));
    }
    if p.is_empty() { Ok(()) } else { Err(p) }
}

fn compression(cfg: &ParquetShardsSinkConfig) -> std::result::Result<Compression, String> {
    match (cfg.compression, cfg.compression_level) {
        (Codec::Zstd, level) => {
            let l = level.unwrap_or(1);
            ZstdLevel::try_new(l)
                .map(Compression::ZSTD)
                .map_err(|_| format!("zstd level must be between 1 and 22, got {l}"))
        }
        (_, Some(l)) => Err(format!("only zstd takes a compression level (got {l})")),
        (Codec::Snappy, None) => Ok(Compression::SNAPPY),
        (Codec::Lz4, None) => Ok(Compression::LZ4_RAW),
        (Codec::None, None) => Ok(Compression::UNCOMPRESSED),
    }
}

/// A checked, prepared output directory.
#[derive(Debug)]
pub struct Prepared {
    cfg: ParquetShardsSinkConfig,
    dir: PathBuf,
}

/// Whether tripline writes files of this name into an output directory.
fn is_ours(name: &str) -> bool {
    name == MANIFEST
        || name == "quarantine"
        || name == "mining_report.json"
        || name == "report.html"
        || name.ends_with(".tmp") && name.starts_with('.')
        || name.starts_with("part-") && name.ends_with(".parquet")
}

/// Refuses a non-empty directory unless overwriting; when overwriting, removes the old
/// manifest first, then the files tripline wrote. Files tripline did not write are never
/// removed: overwriting a directory that holds them is refused.
///
/// # Errors
/// When the directory is not empty and may not be overwritten, or cannot be created.
pub fn prepare(cfg: &ParquetShardsSinkConfig, ctx: &Ctx) -> Result<Prepared> {
    let dir = cfg.path.clone();
    if dir.exists() {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io("listing", &dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        if !entries.is_empty() {
            if !(cfg.overwrite || ctx.overwrite) {
                return Err(Error::OutputNotEmpty(dir));
            }
            if let Some(foreign) = entries.iter().find(|n| !is_ours(n)) {
                return Err(Error::Other(format!(
                    "refusing to overwrite {}: it holds `{foreign}`, which tripline did not write",
                    dir.display()
                )));
            }
            let manifest = dir.join(MANIFEST);
            if manifest.exists() {
                std::fs::remove_file(&manifest).map_err(|e| Error::io("removing", &manifest, e))?;
            }
            for n in entries.iter().filter(|n| *n != MANIFEST) {
                let p = dir.join(n);
                let r = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(|e| Error::io("removing", &p, e))?;
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    Ok(Prepared {
        cfg: cfg.clone(),
        dir,
    })
}

enum Msg {
    Batch(RecordBatch),
    Finish { complete: bool },
}

/// Writes the input into shards, then the manifest.
///
/// # Errors
/// I/O and encoding errors; an upstream failure (no manifest is written then).
pub async fn run(
    p: Prepared,
    mut input: BatchStream,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<()> {
    // Row groups are encoded on the shared pool, at most one per worker plus the one being
    // handed over.
    ctx.pool.reserve(ctx.pool.threads() + 1)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Result<()>>();
    let m = metrics.clone();
    let ctx2 = ctx.clone();
    let handle =
        crate::runtime::spawn::thread(format!("tripline-sink-{}", metrics.name), move || {
            let mut w = ShardWriter::new(p, m, ctx2);
            let r = (|| {
                while let Some(msg) = rx.blocking_recv() {
                    match msg {
                        Msg::Batch(b) => w.write(&b)?,
                        Msg::Finish { complete } => return w.finish(complete),
                    }
                }
                Err(Error::Other("stopped before the end of the input".into()))
            })();
            if r.is_err() {
                w.discard();
            }
            let _ = done_tx.send(r);
        });
    let mut writer = WriterThread {
        tx: Some(tx),
        handle: Some(handle),
    };
    let tx = writer.tx.as_ref().expect("present until drop");
    while let Some(b) = input.next().await {
        let b = b?;
        if tx.send(Msg::Batch(b.data)).await.is_err() {
            break; // the writer failed; its error comes below
        }
    }
    let complete = !ctx.truncated.load(Ordering::SeqCst);
    let _ = tx.send(Msg::Finish { complete }).await;
    drop(writer.tx.take());
    done_rx.await.unwrap_or_else(|_| {
        Err(Error::Other(
            "shard writer thread ended unexpectedly".into(),
        ))
    })
}

/// Closes the writer's channel, then waits for its thread, when the sink stops (normally or by
/// cancellation): a cancelled sink has removed its unfinished temporary file before `run`
/// returns.
struct WriterThread {
    tx: Option<tokio::sync::mpsc::Sender<Msg>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct HashingFile {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Encoded = Result<Vec<ArrowColumnChunk>>;

struct Open {
    writer: SerializedFileWriter<HashingFile>,
    factory: ArrowRowGroupWriterFactory,
    tmp: PathBuf,
    file: String,
    /// Rows accepted into this shard (appended, in flight or pending).
    rows: u64,
    /// Row groups handed to the encoders so far.
    row_groups: usize,
    /// Rows waiting to fill the next row group, and their data size.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pending_bytes: u64,
    /// Row groups being encoded on the worker pool, oldest first.
    in_flight: VecDeque<tokio::sync::oneshot::Receiver<Encoded>>,
}

struct ShardWriter {
    cfg: ParquetShardsSinkConfig,
    dir: PathBuf,
    props: WriterProperties,
    metrics: Arc<ComponentMetrics>,
    ctx: Ctx,
    /// Row groups encoded in parallel at most.
    encoders: usize,
    current: Option<Open>,
    shards: Vec<ShardEntry>,
    schema: Option<SchemaRef>,
}

/// The data size of a (possibly sliced) batch: the bytes its rows occupy, not the size of the
/// buffers it shares with other slices. Deterministic, so row group boundaries are too.
fn data_bytes(b: &RecordBatch) -> u64 {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
        .sum()
}

/// Encodes one row group's batches into column chunks (runs on the worker pool).
fn encode(writers: Vec<ArrowColumnWriter>, schema: &SchemaRef, batches: &[RecordBatch]) -> Encoded {
    let mut writers = writers;
    for b in batches {
        let mut w = writers.iter_mut();
        for (field, col) in schema.fields().iter().zip(b.columns()) {
            for leaf in compute_leaves(field, col).map_err(|e| Error::parquet("encoding", e))? {
                w.next()
                    .expect("one writer per leaf")
                    .write(&leaf)
                    .map_err(|e| {
                        Error::parquet(format!("encoding column `{}`", field.name()), e)
                    })?;
            }
        }
    }
    writers
        .into_iter()
        .map(|w| w.close().map_err(|e| Error::parquet("encoding", e)))
        .collect()
}

impl ShardWriter {
    fn new(p: Prepared, metrics: Arc<ComponentMetrics>, ctx: Ctx) -> ShardWriter {
        let props = WriterProperties::builder()
            .set_compression(compression(&p.cfg).expect("validated"))
            .set_max_row_group_row_count(Some(p.cfg.row_group_rows))
            .build();
        let encoders = ctx.pool.threads().max(1);
        ShardWriter {
            cfg: p.cfg,
            dir: p.dir,
            props,
            metrics,
            ctx,
            encoders,
            current: None,
            shards: Vec::new(),
            schema: None,
        }
    }

    fn open(&mut self, schema: &SchemaRef) -> Result<&mut Open> {
        if self.current.is_none() {
            let file = format!("part-{:05}.parquet", self.shards.len());
            let tmp = self.dir.join(format!(".{file}.tmp"));
            let f = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
            let hf = HashingFile {
                inner: BufWriter::with_capacity(1 << 20, f),
                hasher: Sha256::new(),
                bytes: 0,
            };
            let (writer, factory) =
                ArrowWriter::try_new(hf, schema.clone(), Some(self.props.clone()))
                    .and_then(ArrowWriter::into_serialized_writer)
                    .map_err(|e| Error::parquet(format!("starting {}", tmp.display()), e))?;
            self.current = Some(Open {
                writer,
                factory,
                tmp,
                file,
                rows: 0,
                row_groups: 0,
                pending: Vec::new(),
                pending_rows: 0,
                pending_bytes: 0,
                in_flight: VecDeque::new(),
            });
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let t = Instant::now();
        let schema = batch.schema();
        if self.schema.is_none() {
            self.schema = Some(schema.clone());
        }
        let rows_per_shard = self.cfg.effective_rows_per_shard();
        let mut off = 0usize;
        while off < batch.num_rows() {
            let open = self.open(&schema)?;
            let room = rows_per_shard.map_or(u64::MAX, |r| r - open.rows);
            let len = (batch.num_rows() - off).min(room.min(usize::MAX as u64) as usize);
            let part = batch.slice(off, len);
            open.pending_bytes += data_bytes(&part);
            open.pending.push(part);
            open.pending_rows += len;
            open.rows += len as u64;
            off += len;
            let full_rows = rows_per_shard.is_some_and(|r| open.rows >= r);
            self.metrics
                .rows_out
                .fetch_add(len as u64, Ordering::Relaxed);
            self.submit_full_row_groups(&schema)?;
            let full_bytes = self.cfg.max_shard_bytes.is_some_and(|b| {
                self.current
                    .as_ref()
                    .is_some_and(|o| o.writer.bytes_written() as u64 >= b)
            });
            if full_rows || full_bytes {
                self.close_current()?;
            }
        }
        self.metrics
            .busy_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Hands every complete row group to the encoders, appending finished ones in order. A
    /// row group is complete at `row_group_rows` rows, or when the pending data reaches
    /// `row_group_bytes` (then all pending rows form the row group).
    fn submit_full_row_groups(&mut self, schema: &SchemaRef) -> Result<()> {
        if self.current.as_ref().is_some_and(|o| {
            o.pending_bytes >= self.cfg.row_group_bytes && o.pending_rows < self.cfg.row_group_rows
        }) {
            let open = self.current.as_mut().expect("checked");
            let rest = std::mem::take(&mut open.pending);
            open.pending_rows = 0;
            open.pending_bytes = 0;
            return self.submit(rest, schema);
        }
        let rg_rows = self.cfg.row_group_rows;
        while self
            .current
            .as_ref()
            .is_some_and(|o| o.pending_rows >= rg_rows)
        {
            let open = self.current.as_mut().expect("checked");
            let mut take = Vec::new();
            let mut need = rg_rows;
            while need > 0 {
                let b = open.pending.remove(0);
                if b.num_rows() <= need {
                    need -= b.num_rows();
                    take.push(b);
                } else {
                    take.push(b.slice(0, need));
                    open.pending.insert(0, b.slice(need, b.num_rows() - need));
                    need = 0;
                }
            }
            open.pending_rows -= rg_rows;
            open.pending_bytes = open.pending.iter().map(data_bytes).sum();
            self.submit(take, schema)?;
        }
        Ok(())
    }

    fn submit(&mut self, batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<()> {
        let encoders = self.encoders;
        let open = self.current.as_mut().expect("a shard is open");
        let writers = open
            .factory
            .create_column_writers(open.row_groups)
            .map_err(|e| Error::parquet("starting a row group", e))?;
        open.row_groups += 1;
        let schema = schema.clone();
        let rx = self
            .ctx
            .pool
            .submit(move || encode(writers, &schema, &batches));
        open.in_flight.push_back(rx);
        while open.in_flight.len() > encoders {
            Self::append_oldest(open)?;
        }
        Ok(())
    }

    fn append_oldest(open: &mut Open) -> Result<()> {
        let Some(rx) = open.in_flight.pop_front() else {
            return Ok(());
        };
        let chunks = rx
            .blocking_recv()
            .map_err(|_| Error::Other("the worker pool shut down while encoding".into()))??;
        let mut rg = open
            .writer
            .next_row_group()
            .map_err(|e| Error::parquet(format!("writing {}", open.tmp.display()), e))?;
        for c in chunks {
            c.append_to_row_group(&mut rg)
                .map_err(|e| Error::parquet(format!("writing {}", open.tmp.display()), e))?;
        }
        rg.close()
            .map_err(|e| Error::parquet(format!("writing {}", open.tmp.display()), e))?;
        Ok(())
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(schema) = self.schema.clone() else {
            return Ok(());
        };
        if self.current.as_ref().is_some_and(|o| o.pending_rows > 0) {
            let open = self.current.as_mut().expect("checked");
            let rest = std::mem::take(&mut open.pending);
            open.pending_rows = 0;
            open.pending_bytes = 0;
            self.submit(rest, &schema)?;
        }
        let Some(mut open) = self.current.take() else {
            return Ok(());
        };
        while !open.in_flight.is_empty() {
            Self::append_oldest(&mut open)?;
        }
        let hf = open
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(format!("finishing {}", open.tmp.display()), e))?;
        let HashingFile {
            inner,
            hasher,
            bytes,
        } = hf;
        let f = inner
            .into_inner()
            .map_err(|e| Error::io("writing", &open.tmp, e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io("syncing", &open.tmp, e))?;
        let dest = self.dir.join(&open.file);
        std::fs::rename(&open.tmp, &dest).map_err(|e| Error::io("renaming", &open.tmp, e))?;
        tracing::debug!("shard complete: {} ({} rows)", dest.display(), open.rows);
        self.shards.push(ShardEntry {
            file: open.file,
            rows: open.rows,
            bytes,
            sha256: hex::encode(hasher.finalize()),
        });
        Ok(())
    }

    fn finish(&mut self, complete: bool) -> Result<()> {
        self.close_current()?;
        if self.ctx.failed.load(Ordering::SeqCst) {
            return Err(Error::Other(
                "the pipeline failed; no manifest written".into(),
            ));
        }
        let schema = self
            .schema
            .clone()
            .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
        let manifest = Manifest {
            format: FORMAT.to_string(),
            rows: self.shards.iter().map(|s| s.rows).sum(),
            bytes: self.shards.iter().map(|s| s.bytes).sum(),
            shards: self.shards.clone(),
            schema: schema_entries(&schema),
            compression: format!("{:?}", self.cfg.compression).to_lowercase(),
            tripline_version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: self.ctx.config_hash.to_string(),
            complete,
        };
        write_atomic(
            &self.dir,
            MANIFEST,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
        )?;
        self.metrics
            .set_detail("output", self.dir.display().to_string());
        self.metrics.set_detail("shards", self.shards.len());
        self.metrics.set_detail("bytes", manifest.bytes);
        Ok(())
    }

    /// Removes the temporary file of an unfinished shard.
    fn discard(&mut self) {
        if let Some(open) = self.current.take() {
            drop(open);
            let tmp = self
                .dir
                .join(format!(".part-{:05}.parquet.tmp", self.shards.len()));
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Writes `dir/name` atomically: a temporary file, flushed to disk, renamed, directory synced.
///
/// # Errors
/// Any I/O failure, naming the file.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dest = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| Error::io("renaming", &tmp, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
