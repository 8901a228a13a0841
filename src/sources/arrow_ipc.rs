//! `type: arrow_ipc` — Arrow IPC files in the file format (random access) or the stream format,
//! told apart by the file's leading magic bytes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::{FileReader, StreamReader};
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use super::{PlanProblem, SourcePlan, project, relabel, resolve_files, same_projection};
use crate::batch::Batch;
use crate::config::ArrowIpcSourceConfig;
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::stream::BatchStream;

enum Reader {
    File(FileReader<BufReader<File>>),
    Stream(StreamReader<BufReader<File>>),
}

impl Reader {
    fn open(path: &Path) -> std::result::Result<Reader, String> {
        let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut magic = [0u8; 6];
        let is_file = f.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
        drop(f);
        let f = BufReader::new(File::open(path).map_err(|e| format!("cannot open: {e}"))?);
        if is_file {
            FileReader::try_new(f, None)
                .map(Reader::File)
                .map_err(|e| format!("not a readable Arrow IPC file: {e}"))
        } else {
            StreamReader::try_new(f, None)
                .map(Reader::Stream)
                .map_err(|e| format!("not a readable Arrow IPC file or stream: {e}"))
        }
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Reader::File(r) => r.schema(),
            Reader::Stream(r) => r.schema(),
        }
    }

    fn next(&mut self) -> Option<arrow::error::Result<RecordBatch>> {
        match self {
            Reader::File(r) => r.next(),
            Reader::Stream(r) => r.next(),
        }
    }
}

/// Resolves files and reads every header; checks columns and renames.
///
/// # Errors
/// Every problem found.
pub fn plan(cfg: &ArrowIpcSourceConfig) -> std::result::Result<SourcePlan, Vec<PlanProblem>> {
    let files = resolve_files(&cfg.path)?;
    let mut problems = Vec::new();
    super::parquet::check_common(cfg.batch_rows, cfg.shard.as_ref(), &mut problems);
    let mut schema: Option<SchemaRef> = None;
    for f in &files {
        let r = match Reader::open(f) {
            Ok(r) => r,
            Err(e) => {
                problems.push((vec!["path".into()], format!("{}: {e}", f.display())));
                continue;
            }
        };
        match project(&r.schema(), cfg.columns.as_deref(), &cfg.rename) {
            Ok((_, s)) => match &schema {
                None => schema = Some(s),
                Some(first) => {
                    if let Some(d) = same_projection(first, &s) {
                        problems.push((
                            vec!["path".into()],
                            format!("{}: {d} ({})", f.display(), files[0].display()),
                        ));
                    }
                }
            },
            Err(ps) => problems.extend(
                ps.into_iter()
                    .map(|(k, m)| (k, format!("{}: {m}", f.display()))),
            ),
        }
    }
    match (problems.is_empty(), schema) {
        (true, Some(schema)) => Ok(SourcePlan {
            files,
            schema,
            rows: None,
        }),
        _ => Err(problems),
    }
}

/// Opens the source's lazy stream.
pub fn open(
    cfg: ArrowIpcSourceConfig,
    plan: SourcePlan,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> BatchStream {
    let name = metrics.name.clone();
    threaded(ctx, name, move |tx| read_all(&cfg, &plan, &tx, &metrics))
}

fn read_all(
    cfg: &ArrowIpcSourceConfig,
    plan: &SourcePlan,
    tx: &tokio::sync::mpsc::Sender<Result<Batch>>,
    metrics: &ComponentMetrics,
) -> Result<()> {
    let mut unit = 0u64;
    let mut seq = 0u64;
    for path in &plan.files {
        let origin: Arc<str> = Arc::from(path.display().to_string());
        let input_err = |m: String| Error::Input {
            path: path.clone(),
            message: m,
        };
        let mut reader = Reader::open(path).map_err(input_err)?;
        let (indices, _) = project(&reader.schema(), cfg.columns.as_deref(), &cfg.rename)
            .map_err(|ps| input_err(ps.into_iter().map(|p| p.1).collect::<Vec<_>>().join("; ")))?;
        let mut row = 0u64;
        let mut index = 0u64;
        let mut t = Instant::now();
        while let Some(b) = reader.next() {
            let b =
                b.map_err(|e| input_err(format!("record batch {index} (from row {row}): {e}")))?;
            let n = b.num_rows() as u64;
            let take = cfg
                .shard
                .is_none_or(|s| unit % s.count as u64 == s.index as u64);
            unit += 1;
            index += 1;
            if take {
                let b =
                    relabel(&b, &indices, &plan.schema).map_err(|e| input_err(e.to_string()))?;
                let mut off = 0;
                while off < b.num_rows() {
                    let len = cfg.batch_rows.min(b.num_rows() - off);
                    metrics
                        .busy_ns
                        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    let batch =
                        Batch::new(b.slice(off, len), seq, origin.clone(), row + off as u64);
                    if tx.blocking_send(Ok(batch)).is_err() {
                        return Ok(());
                    }
                    t = Instant::now();
                    seq += 1;
                    off += len;
                }
            }
            row += n;
        }
    }
    Ok(())
}

/// Runs a blocking reader on its own thread, feeding a channel of capacity one, and exposes it
/// as a lazy stream. The thread starts at the first poll and exits when the stream is dropped.
/// A drain request (Ctrl-C) ends the stream early and marks the run as truncated.
pub(crate) fn threaded<F>(ctx: Ctx, name: String, read: F) -> BatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Batch>>) -> Result<()> + Send + 'static,
{
    Box::pin(async_stream::try_stream! {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Batch>>(1);
        let err_tx = tx.clone();
        let handle = crate::runtime::spawn::thread(format!("tripline-src-{name}"), move || {
            if let Err(e) = read(tx) {
                let _ = err_tx.blocking_send(Err(e));
            }
        });
        let mut reader = JoinOnDrop { rx: Some(rx), handle: Some(handle) };
        let mut shutdown = ctx.shutdown.clone();
        loop {
            let rx = reader.rx.as_mut().expect("present until drop");
            tokio::select! {
                biased;
                _ = shutdown.draining() => {
                    ctx.truncated.store(true, Ordering::SeqCst);
                    break;
                }
                m = rx.recv() => match m {
                    Some(b) => yield b?,
                    None => break,
                },
            }
        }
    })
    .boxed()
}

/// Closes the reader's channel, then waits for its thread, when the stream is dropped: a
/// cancelled source leaves no thread behind. The thread notices the closed channel at its next
/// send, so the wait is at most one batch's decoding.
struct JoinOnDrop {
    rx: Option<tokio::sync::mpsc::Receiver<Result<Batch>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
