//! `type: arrow_ipc` — Arrow IPC files in the file format (random access) or the stream format,
//! told apart by the file's leading magic bytes.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::try_fb_to_schema;
use arrow::ipc::reader::{FileDecoder, FileReader, StreamReader, read_footer_length};
use arrow::ipc::{Block, root_as_footer};
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
    Mapped(MappedFile),
    Stream(StreamReader<BufReader<File>>),
}

impl Reader {
    /// Opens an IPC file (mapped into memory when `memory_map`) or stream.
    fn open(path: &Path, memory_map: bool) -> std::result::Result<Reader, String> {
        let mut f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut magic = [0u8; 6];
        let is_file = f.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
        if is_file && memory_map {
            return MappedFile::open(&f)
                .map(Reader::Mapped)
                .map_err(|e| format!("not a readable Arrow IPC file: {e}"));
        }
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
            Reader::Mapped(r) => r.schema.clone(),
            Reader::Stream(r) => r.schema(),
        }
    }

    /// The next record batch's row count and, with `decode`, the batch. Without `decode` (a
    /// batch another shard takes) a mapped file reads only the batch's metadata.
    fn next(&mut self, decode: bool) -> Option<arrow::error::Result<(u64, Option<RecordBatch>)>> {
        let read = |b: arrow::error::Result<RecordBatch>| b.map(|b| (b.num_rows() as u64, Some(b)));
        match self {
            Reader::File(r) => r.next().map(read),
            Reader::Mapped(r) => r.next(decode),
            Reader::Stream(r) => r.next().map(read),
        }
    }
}

/// An IPC file mapped into memory. Record batches are decoded in place: their buffers point
/// into the mapping (the page cache), so nothing is copied or zero-filled on the way, and a
/// batch another shard takes is never touched.
struct MappedFile {
    decoder: FileDecoder,
    /// Each record batch's block and its bytes (metadata and body), checked to lie in the file.
    blocks: Vec<(Block, Buffer)>,
    next: usize,
    schema: SchemaRef,
}

impl MappedFile {
    fn open(f: &File) -> std::result::Result<MappedFile, String> {
        // SAFETY: the mapping is read-only. Like every reader of a memory-mapped file, it
        // relies on the file not being truncated while it is read (`memory_map: false` reads
        // it with `read` instead); the documentation of the option says so.
        let map = unsafe { memmap2::Mmap::map(f) }.map_err(|e| format!("cannot map: {e}"))?;
        let _ = map.advise(memmap2::Advice::Sequential);
        let data = Buffer::from(bytes::Bytes::from_owner(map));
        let len = data.len();
        if len < 6 + 10 {
            return Err(format!("{len} bytes is too short for the file format"));
        }
        let trailer: [u8; 10] = data[len - 10..].try_into().expect("ten bytes");
        let footer_len = read_footer_length(trailer).map_err(|e| e.to_string())?;
        let footer_start = (len - 10)
            .checked_sub(footer_len)
            .filter(|s| *s >= 8)
            .ok_or_else(|| format!("footer of {footer_len} bytes does not fit in {len} bytes"))?;
        let footer = root_as_footer(&data[footer_start..len - 10])
            .map_err(|e| format!("unreadable footer: {e}"))?;
        let schema = footer
            .schema()
            .ok_or("the footer has no schema")
            .and_then(|s| try_fb_to_schema(s).map_err(|_| "the footer's schema is invalid"))
            .map_err(str::to_string)?;
        let schema = Arc::new(schema);
        let block = |b: &Block, what: &str| -> std::result::Result<Buffer, String> {
            let at = usize::try_from(b.offset()).ok();
            let n = usize::try_from(b.metaDataLength())
                .ok()
                .zip(usize::try_from(b.bodyLength()).ok())
                .and_then(|(m, b)| m.checked_add(b));
            match (at, n) {
                (Some(at), Some(n)) if at.checked_add(n).is_some_and(|end| end <= footer_start) => {
                    Ok(data.slice_with_length(at, n))
                }
                _ => Err(format!(
                    "{what} block at offset {} ({} + {} bytes) lies outside the file's {len} bytes",
                    b.offset(),
                    b.metaDataLength(),
                    b.bodyLength()
                )),
            }
        };
        let mut decoder = FileDecoder::new(schema.clone(), footer.version());
        for b in footer.dictionaries().iter().flatten() {
            decoder
                .read_dictionary(b, &block(b, "dictionary")?)
                .map_err(|e| format!("dictionary: {e}"))?;
        }
        let blocks = footer
            .recordBatches()
            .iter()
            .flatten()
            .map(|b| Ok((*b, block(b, "record batch")?)))
            .collect::<std::result::Result<Vec<_>, String>>()?;
        Ok(MappedFile {
            decoder,
            blocks,
            next: 0,
            schema,
        })
    }

    fn next(&mut self, decode: bool) -> Option<arrow::error::Result<(u64, Option<RecordBatch>)>> {
        use arrow::error::ArrowError;
        let (b, buf) = self.blocks.get(self.next)?;
        self.next += 1;
        let meta = b.metaDataLength() as usize;
        if !decode {
            // An encapsulated message: optional continuation marker, length, flatbuffer.
            let fb = match buf.get(..4) {
                Some([0xff, 0xff, 0xff, 0xff]) => buf.get(8..meta),
                _ => buf.get(4..meta),
            };
            return Some(
                fb.and_then(|fb| arrow::ipc::root_as_message(fb).ok())
                    .and_then(|m| m.header_as_record_batch())
                    .map(|r| (r.length() as u64, None))
                    .ok_or_else(|| ArrowError::IpcError("unreadable record batch metadata".into())),
            );
        }
        Some(match self.decoder.read_record_batch(b, buf) {
            Ok(Some(batch)) => Ok((batch.num_rows() as u64, Some(batch))),
            Ok(None) => Err(ArrowError::IpcError(
                "a record batch block holds no record batch".into(),
            )),
            Err(e) => Err(e),
        })
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
        let r = match Reader::open(f, cfg.memory_map) {
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
        let mut reader = Reader::open(path, cfg.memory_map).map_err(input_err)?;
        let (indices, _) = project(&reader.schema(), cfg.columns.as_deref(), &cfg.rename)
            .map_err(|ps| input_err(ps.into_iter().map(|p| p.1).collect::<Vec<_>>().join("; ")))?;
        let mut row = 0u64;
        let mut index = 0u64;
        let mut t = Instant::now();
        loop {
            let take = cfg
                .shard
                .is_none_or(|s| unit % s.count as u64 == s.index as u64);
            let Some(b) = reader.next(take) else { break };
            let (n, b) =
                b.map_err(|e| input_err(format!("record batch {index} (from row {row}): {e}")))?;
            unit += 1;
            index += 1;
            if let (true, Some(b)) = (take, b) {
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
