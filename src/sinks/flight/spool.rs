//! The spool: the first pass, kept on disk so that later epochs replay it.
//!
//! The file is an Arrow IPC stream (the schema message, every batch's messages in first-pass
//! order, the end-of-stream marker) written from the batches' already-encoded Flight messages,
//! so nothing is encoded twice. The byte range of each batch is kept in memory (a few dozen bytes
//! per batch), so a replay reads exactly the bytes of the batch it needs, in any order, and
//! serves them as they are, without decoding; only the in-process channel decodes them.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::buffer::Buffer;
use arrow::datatypes::Schema;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::{EncodedData, write_message};
use arrow::record_batch::RecordBatch;
use prost::bytes::Bytes;
use tokio::sync::mpsc;

use super::encoded::{BatchEncoder, EncodedBatch, Message};
use crate::error::{Error, Result};

/// The continuation marker that starts every message of an IPC stream.
const CONTINUATION: [u8; 4] = [0xff; 4];

/// Batches queued for the spool writer.
const SPOOL_QUEUE: usize = 4;

/// Buffer of the spool writer: the small framing writes are gathered, batch bodies (larger)
/// are written straight from the encoded bytes.
const WRITE_BUFFER: usize = 64 << 10;

/// Read buffers kept for reuse, at most.
const POOLED_BUFFERS: usize = 8;

/// Read buffers given back when every message of a replayed batch has been dropped (sent and
/// out of the replay buffer), so that replay reuses memory already mapped instead of having
/// fresh pages mapped and zeroed for every batch. Holds at most [`POOLED_BUFFERS`] buffers.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    /// An empty buffer with room for `len` bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default();
        v.clear();
        v.reserve_exact(len);
        v
    }
}

/// A read buffer that goes back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.0.lock()
            && p.len() < POOLED_BUFFERS
        {
            p.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Where one message of a batch lies, relative to the start of the batch.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// Offset of the flatbuffer header.
    header: usize,
    /// Length of the header without its padding.
    header_len: usize,
    /// Offset of the body.
    body: usize,
    /// Length of the body.
    body_len: usize,
}

/// Where one batch lies in the file.
#[derive(Debug)]
struct Entry {
    offset: u64,
    len: usize,
    rows: usize,
    parts: Box<[Part]>,
}

/// What a replay delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayAs {
    /// The encoded Flight messages, as they were spooled.
    Encoded,
    /// Decoded record batches (for the in-process channel).
    Decoded,
}

/// A batch in the form its outlet takes.
pub(crate) enum Payload {
    /// Encoded Flight messages.
    Encoded(EncodedBatch),
    /// A record batch.
    Decoded(RecordBatch),
}

impl Payload {
    /// Rows of the batch.
    pub(crate) fn rows(&self) -> usize {
        match self {
            Payload::Encoded(b) => b.rows(),
            Payload::Decoded(b) => b.num_rows(),
        }
    }
}

/// The spool file, removed on drop. Batches are written by a thread behind a small queue, so
/// disk writes overlap serving.
pub(crate) struct Spool {
    path: PathBuf,
    tx: Option<mpsc::Sender<EncodedBatch>>,
    done: Option<tokio::sync::oneshot::Receiver<Result<()>>>,
    /// The framed schema message (what a decoder reads first).
    schema: Bytes,
    /// Where each batch of the first pass lies, by `index`.
    entries: Vec<Entry>,
    /// The same, shared with replay threads once the first pass is complete.
    sealed: Arc<[Entry]>,
    /// Where the next batch will lie.
    end: u64,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spool {
    /// A spool in `dir`, named after `label`; the file is created with the first batch.
    pub(crate) fn new(dir: &Path, label: &str) -> Spool {
        Spool {
            path: Spool::path_in(dir, label),
            tx: None,
            done: None,
            schema: Bytes::new(),
            entries: Vec::new(),
            sealed: Arc::from([]),
            end: 0,
        }
    }

    fn path_in(dir: &Path, label: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        dir.join(format!(
            ".tripline-spool-{safe}-{}-{nanos}.arrow",
            std::process::id()
        ))
    }

    /// Appends a batch of schema `schema`, encoded by `enc`.
    pub(crate) async fn write(
        &mut self,
        schema: &Schema,
        enc: &BatchEncoder,
        b: EncodedBatch,
    ) -> Result<()> {
        if self.tx.is_none() {
            self.start(schema, enc).await?;
        }
        let mut parts = Vec::with_capacity(b.messages().len());
        let mut at = 0usize;
        for m in b.messages() {
            let body_len = m.body_len();
            if body_len % 8 != 0 {
                return Err(Error::Other(format!(
                    "spooling a batch: a message body of {body_len} bytes is not padded to 8 bytes"
                )));
            }
            let padded = padded_header_len(m.header.len());
            parts.push(Part {
                header: at + 8,
                header_len: m.header.len(),
                body: at + 8 + padded,
                body_len,
            });
            at += 8 + padded + body_len;
        }
        self.entries.push(Entry {
            offset: self.end,
            len: at,
            rows: b.rows(),
            parts: parts.into(),
        });
        self.end += at as u64;
        let tx = self.tx.as_ref().expect("started above");
        if tx.send(b).await.is_err() {
            // The writer stopped early: its error says why.
            self.tx = None;
            return Err(self.join().await.err().unwrap_or_else(|| {
                Error::Other(format!("spool writer for {} stopped", self.path.display()))
            }));
        }
        Ok(())
    }

    /// Creates the file (here, so that dropping the spool always finds it to remove), writes
    /// the schema message and starts the writer thread.
    async fn start(&mut self, schema: &Schema, enc: &BatchEncoder) -> Result<()> {
        let s = enc.schema(schema);
        let mut framed = Vec::new();
        write_message(
            &mut framed,
            EncodedData {
                ipc_message: s.header.to_vec(),
                arrow_data: Vec::new(),
            },
            enc.options(),
        )
        .map_err(|e| Error::arrow("encoding the spool's schema", e))?;
        self.schema = Bytes::from(framed);
        self.end = self.schema.len() as u64;
        let path = self.path.clone();
        let head = self.schema.clone();
        let w = tokio::task::spawn_blocking(move || -> Result<BufWriter<File>> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("creating spool directory", dir, e))?;
            }
            let f = File::create(&path).map_err(|e| Error::io("creating", &path, e))?;
            let mut w = BufWriter::with_capacity(WRITE_BUFFER, f);
            w.write_all(&head)
                .map_err(|e| Error::io("writing spool", &path, e))?;
            Ok(w)
        })
        .await
        .map_err(|e| Error::Other(format!("spool writer: {e}")))??;
        let (tx, mut rx) = mpsc::channel::<EncodedBatch>(SPOOL_QUEUE);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let path = self.path.clone();
        crate::runtime::spawn::thread("tripline-spool-writer".into(), move || {
            let mut w = w;
            let r = (|| {
                while let Some(b) = rx.blocking_recv() {
                    for m in b.messages() {
                        write_framed(&mut w, m)?;
                    }
                }
                // End of stream: the file is a complete Arrow IPC stream.
                w.write_all(&CONTINUATION)?;
                w.write_all(&[0; 4])?;
                w.flush()
            })()
            .map_err(|e| Error::io("writing spool", &path, e));
            let _ = done_tx.send(r);
        });
        self.tx = Some(tx);
        self.done = Some(done_rx);
        Ok(())
    }

    async fn join(&mut self) -> Result<()> {
        match self.done.take() {
            Some(done) => done
                .await
                .unwrap_or_else(|_| Err(Error::Other("spool writer thread ended".into()))),
            None => Ok(()),
        }
    }

    /// Waits for every batch to be written and the file to be complete; returns its size.
    pub(crate) async fn finish(&mut self) -> Result<u64> {
        if self.done.is_none() {
            return Ok(0);
        }
        self.tx = None;
        self.join().await?;
        self.sealed = std::mem::take(&mut self.entries).into();
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::io("reading", &self.path, e))
    }

    /// Reads the spooled batches in `order` (first-pass indices) on a thread, a couple ahead.
    /// Call after [`Spool::finish`]: until then no batch is known to the replay.
    pub(crate) fn replay(
        &self,
        order: Vec<u64>,
        how: ReplayAs,
    ) -> mpsc::Receiver<Result<(u64, Payload)>> {
        let (tx, rx) = mpsc::channel(2);
        let path = self.path.clone();
        let entries = self.sealed.clone();
        let pool = Arc::new(Pool::default());
        let schema = self.schema.clone();
        crate::runtime::spawn::thread("tripline-spool".into(), move || {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::io("opening", &path, e)));
                    return;
                }
            };
            let mut decoder = match how {
                ReplayAs::Decoded => match start_decoder(&schema) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                },
                ReplayAs::Encoded => None,
            };
            for index in order {
                let r = match entries.get(index as usize) {
                    None => Err(Error::Other(format!(
                        "spool {}: batch {index} missing",
                        path.display()
                    ))),
                    Some(e) => read_exact_at(&mut file, e.offset, e.len, &pool)
                        .map_err(|err| Error::io("reading spool", &path, err))
                        .and_then(|bytes| match decoder.as_mut() {
                            None => Ok(Payload::Encoded(to_encoded(&bytes, e.rows, &e.parts))),
                            Some(d) => decode(d, bytes).map(Payload::Decoded).map_err(|e| {
                                Error::arrow(format!("reading spool {}", path.display()), e)
                            }),
                        }),
                }
                .map(|b| (index, b));
                let failed = r.is_err();
                if tx.blocking_send(r).is_err() || failed {
                    return;
                }
            }
        });
        rx
    }
}

/// Length of a header once padded so that the prefix and the header end on 8 bytes.
fn padded_header_len(len: usize) -> usize {
    (len + 8).next_multiple_of(8) - 8
}

/// Writes one message in IPC stream framing: continuation marker, padded header length,
/// header, padding, body.
pub(super) fn write_framed(w: &mut impl Write, m: &Message) -> std::io::Result<()> {
    let padded = padded_header_len(m.header.len());
    let len = i32::try_from(padded).map_err(std::io::Error::other)?;
    w.write_all(&CONTINUATION)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&m.header)?;
    w.write_all(&[0u8; 8][..padded - m.header.len()])?;
    m.body.iter().try_for_each(|c| w.write_all(c))
}

/// Reads `len` bytes at `offset` into a buffer of `pool` (not zeroed first).
fn read_exact_at(
    file: &mut File,
    offset: u64,
    len: usize,
    pool: &Arc<Pool>,
) -> std::io::Result<Bytes> {
    file.seek(SeekFrom::Start(offset))?;
    let mut v = pool.take(len);
    file.take(len as u64).read_to_end(&mut v)?;
    if v.len() != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes at offset {offset}, read {}", v.len()),
        ));
    }
    Ok(Bytes::from_owner(Pooled {
        buf: v,
        pool: pool.clone(),
    }))
}

/// The Flight messages of a spooled batch: slices of the bytes read, no copy.
fn to_encoded(bytes: &Bytes, rows: usize, parts: &[Part]) -> EncodedBatch {
    let messages = parts
        .iter()
        .map(|p| {
            Message::new(
                bytes.slice(p.header..p.header + p.header_len),
                bytes.slice(p.body..p.body + p.body_len),
            )
        })
        .collect();
    EncodedBatch::new(messages, rows)
}

/// A decoder that has read the schema message.
fn start_decoder(schema: &Bytes) -> Result<StreamDecoder> {
    let mut d = StreamDecoder::new();
    let mut b = Buffer::from(schema.clone());
    while !b.is_empty() {
        d.decode(&mut b)
            .map_err(|e| Error::arrow("reading the spool's schema", e))?;
    }
    Ok(d)
}

/// Decodes the messages of one spooled batch (its dictionaries, then the batch).
fn decode(
    d: &mut StreamDecoder,
    bytes: Bytes,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let mut b = Buffer::from(bytes);
    while !b.is_empty() {
        if let Some(batch) = d.decode(&mut b)? {
            return Ok(batch);
        }
    }
    Err(arrow::error::ArrowError::IpcError(
        "a spooled batch holds no record batch".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, DictionaryArray, Int64Array};
    use arrow::datatypes::Int32Type;

    /// Batches with a dictionary column whose dictionary differs from batch to batch.
    fn batches() -> Vec<RecordBatch> {
        (0..3i64)
            .map(|i| {
                let words: Vec<String> = (0..5)
                    .map(|j| format!("w{}", i * 10 + j % (i + 2)))
                    .collect();
                let dict: DictionaryArray<Int32Type> = words.iter().map(String::as_str).collect();
                RecordBatch::try_from_iter(vec![
                    (
                        "id",
                        Arc::new(Int64Array::from_iter_values(i * 5..i * 5 + 5)) as ArrayRef,
                    ),
                    ("word", Arc::new(dict) as ArrayRef),
                ])
                .unwrap()
            })
            .collect()
    }

    async fn replay_all(sp: &Spool, order: Vec<u64>, how: ReplayAs) -> Vec<(u64, Payload)> {
        let mut rx = sp.replay(order, how);
        let mut out = Vec::new();
        while let Some(r) = rx.recv().await {
            out.push(r.unwrap());
        }
        out
    }

    /// Spools `input` in `dir`; returns the spool, the encoded batches and the file size.
    async fn spooled(
        dir: &Path,
        label: &str,
        input: &[RecordBatch],
    ) -> (Spool, Vec<EncodedBatch>, u64) {
        let enc = BatchEncoder::new();
        let mut sp = Spool::new(dir, label);
        let mut encoded = Vec::new();
        for b in input {
            let e = enc.encode(b).unwrap();
            encoded.push(e.clone());
            sp.write(b.schema_ref(), &enc, e).await.unwrap();
        }
        let size = sp.finish().await.unwrap();
        (sp, encoded, size)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_the_spooled_bytes_and_batches_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let input = batches();
        let (sp, encoded, size) = spooled(dir.path(), "test", &input).await;
        assert!(
            encoded.iter().all(|e| e.messages().len() == 2),
            "each batch carries its dictionary"
        );
        // The file is a complete Arrow IPC stream.
        let path = sp.path.clone();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let read: Vec<RecordBatch> =
            arrow::ipc::reader::StreamReader::try_new(File::open(&path).unwrap(), None)
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
        assert_eq!(read, input);

        let order = vec![2, 0, 1];
        for (i, p) in replay_all(&sp, order.clone(), ReplayAs::Decoded).await {
            let Payload::Decoded(b) = p else {
                panic!("asked for decoded batches")
            };
            assert_eq!(b, input[i as usize], "batch {i}");
        }
        let got = replay_all(&sp, order.clone(), ReplayAs::Encoded).await;
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), order);
        for (i, p) in got {
            let Payload::Encoded(e) = p else {
                panic!("asked for encoded batches")
            };
            let want = &encoded[i as usize];
            assert_eq!(e.rows(), want.rows());
            assert_eq!(e.messages().len(), want.messages().len());
            for (a, b) in e.messages().iter().zip(want.messages()) {
                assert_eq!(a.header, b.header, "batch {i}");
                assert_eq!(
                    a.to_flight_data().data_body,
                    b.to_flight_data().data_body,
                    "batch {i}"
                );
            }
        }
        drop(sp);
        assert!(!path.exists(), "the spool is removed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_truncated_spool_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (sp, _, size) = spooled(dir.path(), "cut", &batches()).await;
        File::options()
            .write(true)
            .open(&sp.path)
            .unwrap()
            .set_len(size / 2)
            .unwrap();
        let mut rx = sp.replay(vec![2], ReplayAs::Encoded);
        let err = match rx.recv().await {
            Some(Err(e)) => e.to_string(),
            _ => panic!("reading past the end must fail"),
        };
        assert!(err.contains(".tripline-spool-cut"), "{err}");
    }
}
