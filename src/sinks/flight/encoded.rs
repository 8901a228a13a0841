//! Batches encoded once as Flight (Arrow IPC) messages. A message's body is a list of chunks
//! that share memory with the batch's own Arrow buffers (only offsets that must be rebased,
//! bit-shifted validity and padding are new bytes), and the encoded batch is reference-counted
//! and shared by the live stream of a rank, its replay buffer and the spool: a batch is encoded
//! once, and its data is not copied on the way to the socket or the spool file.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions, StreamEncoder};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use prost::bytes::{Bytes, BytesMut};

/// Body pieces shorter than this are gathered into one chunk (a copy of a few bytes beats one
/// more write for the socket); longer ones are sent from the batch's memory.
const GATHER_BELOW: usize = 4096;

/// One Flight message: the IPC header (a flatbuffer `Message`), the body as chunks, and the
/// application metadata. Cloning shares the bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Message {
    /// The IPC message header (`FlightData.data_header`).
    pub(crate) header: Bytes,
    /// The body (`FlightData.data_body`) in order, in chunks.
    pub(crate) body: Vec<Bytes>,
    /// `FlightData.app_metadata`.
    pub(crate) app_metadata: Bytes,
}

impl Message {
    /// A message whose body is one contiguous buffer.
    pub(crate) fn new(header: Bytes, body: Bytes) -> Message {
        Message {
            header,
            body: if body.is_empty() { vec![] } else { vec![body] },
            app_metadata: Bytes::new(),
        }
    }

    /// Bytes in the body.
    pub(crate) fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// As one `FlightData`, its body made contiguous (a copy unless it is one chunk already).
    pub(crate) fn to_flight_data(&self) -> FlightData {
        let data_body = match self.body.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = BytesMut::with_capacity(self.body_len());
                many.iter().for_each(|c| b.extend_from_slice(c));
                b.freeze()
            }
        };
        FlightData {
            flight_descriptor: None,
            data_header: self.header.clone(),
            app_metadata: self.app_metadata.clone(),
            data_body,
        }
    }
}

/// A record batch encoded as Flight messages: the dictionary batches it needs (none unless a
/// column is dictionary-encoded), then the record batch message. Each batch is self-contained,
/// so batches can be sent in any order and a stream can start at any batch. Cloning shares
/// the bytes.
#[derive(Debug, Clone)]
pub(crate) struct EncodedBatch {
    messages: Arc<[Message]>,
    rows: usize,
}

impl EncodedBatch {
    /// Wraps messages (dictionaries first, the record batch last) of a batch of `rows` rows.
    pub(crate) fn new(messages: Vec<Message>, rows: usize) -> EncodedBatch {
        debug_assert!(
            !messages.is_empty(),
            "an encoded batch has its record batch message"
        );
        EncodedBatch {
            messages: messages.into(),
            rows,
        }
    }

    /// Rows of the batch.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The messages, without application metadata.
    pub(crate) fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages to send, the record batch message carrying `app_metadata`. Only reference
    /// counts change: no byte of the batch is copied.
    pub(crate) fn to_send(&self, app_metadata: Bytes) -> Vec<Message> {
        let mut out = self.messages.to_vec();
        if let Some(last) = out.last_mut() {
            last.app_metadata = app_metadata;
        }
        out
    }
}

/// Encodes record batches into [`EncodedBatch`]es.
pub(crate) struct BatchEncoder {
    generator: IpcDataGenerator,
    options: IpcWriteOptions,
}

impl BatchEncoder {
    /// An encoder with the default IPC options (uncompressed, 64-byte alignment).
    pub(crate) fn new() -> BatchEncoder {
        BatchEncoder {
            generator: IpcDataGenerator::default(),
            options: IpcWriteOptions::default(),
        }
    }

    /// The IPC options batches are encoded with.
    pub(crate) fn options(&self) -> &IpcWriteOptions {
        &self.options
    }

    /// The schema message that starts a stream of these batches.
    pub(crate) fn schema(&self, schema: &Schema) -> Message {
        let mut tracker = DictionaryTracker::new(false);
        let e = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut tracker,
            &self.options,
        );
        Message::new(e.ipc_message.into(), Bytes::new())
    }

    /// Encodes `batch` once. The body chunks are the batch's own buffers wherever Arrow can
    /// send them as they are.
    ///
    /// # Errors
    /// When Arrow cannot encode the batch.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<EncodedBatch, ArrowError> {
        // A fresh encoder per batch makes every batch carry its own dictionaries (it learns the
        // dictionary ids from the schema, in the order the schema message assigns them); its
        // schema message is dropped below.
        let mut enc =
            StreamEncoder::try_new_with_options(batch.schema_ref(), self.options.clone())?;
        let messages = split_messages(enc.encode(batch)?)?;
        if messages.is_empty() {
            return Err(ArrowError::IpcError(
                "encoding a batch gave no record batch message".into(),
            ));
        }
        Ok(EncodedBatch::new(messages, batch.num_rows()))
    }
}

/// The messages of an IPC stream given as buffers (continuation marker, header length, header,
/// body, ...), without the schema message. Headers are made contiguous; body pieces keep
/// their memory unless they are small.
fn split_messages(buffers: Vec<arrow::buffer::Buffer>) -> Result<Vec<Message>, ArrowError> {
    let mut r = Pieces(
        buffers
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(Bytes::from)
            .collect(),
    );
    let mut out = Vec::new();
    while !r.0.is_empty() {
        let prefix = r.contiguous(8)?;
        if prefix[..4] != [0xff; 4] {
            return Err(ArrowError::IpcError(
                "an encoded message lacks the continuation marker".into(),
            ));
        }
        let len = i32::from_le_bytes(prefix[4..8].try_into().expect("four bytes"));
        let len = usize::try_from(len)
            .map_err(|_| ArrowError::IpcError(format!("negative header length {len}")))?;
        if len == 0 {
            break; // end of stream
        }
        let header = r.contiguous(len)?;
        let m = root_as_message(&header)
            .map_err(|e| ArrowError::IpcError(format!("an encoded header: {e}")))?;
        let body_len = usize::try_from(m.bodyLength())
            .map_err(|_| ArrowError::IpcError("negative body length".into()))?;
        let schema = m.header_type() == MessageHeader::Schema;
        let body = r.chunks(body_len)?;
        if !schema {
            out.push(Message {
                header,
                body,
                app_metadata: Bytes::new(),
            });
        }
    }
    Ok(out)
}

/// A queue of byte pieces read from the front.
struct Pieces(VecDeque<Bytes>);

impl Pieces {
    fn short(n: usize) -> ArrowError {
        ArrowError::IpcError(format!("an encoded message ends {n} bytes early"))
    }

    /// The next `n` bytes as one buffer (a copy only when they span pieces).
    fn contiguous(&mut self, n: usize) -> Result<Bytes, ArrowError> {
        match self.0.front_mut() {
            Some(f) if f.len() >= n => {
                let b = f.split_to(n);
                if f.is_empty() {
                    self.0.pop_front();
                }
                Ok(b)
            }
            _ => {
                let mut b = BytesMut::with_capacity(n);
                for c in self.chunks(n)? {
                    b.extend_from_slice(&c);
                }
                Ok(b.freeze())
            }
        }
    }

    /// The next `n` bytes as chunks: pieces of at least [`GATHER_BELOW`] bytes as they are,
    /// runs of smaller ones gathered into one.
    fn chunks(&mut self, mut n: usize) -> Result<Vec<Bytes>, ArrowError> {
        let mut out = Vec::new();
        let mut small = BytesMut::new();
        while n > 0 {
            let mut piece = self.0.pop_front().ok_or_else(|| Self::short(n))?;
            if piece.len() > n {
                self.0.push_front(piece.split_off(n));
            }
            n -= piece.len();
            if piece.len() < GATHER_BELOW {
                small.extend_from_slice(&piece);
            } else {
                if !small.is_empty() {
                    out.push(small.split().freeze());
                }
                out.push(piece);
            }
        }
        if !small.is_empty() {
            out.push(small.freeze());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, BooleanArray, DictionaryArray, FixedSizeListArray, Float32Array, Int64Array,
        ListArray, StringArray, StructArray,
    };
    use arrow::datatypes::{Field, Int32Type};
    use arrow::ipc::writer::IpcWriteContext;

    /// A batch with every layout the encoder has to get right: nulls, strings, a dictionary,
    /// a fixed-size list of floats (embeddings), a list and a struct; large enough that the
    /// big buffers are sent from the batch's memory.
    fn batch(n: usize) -> RecordBatch {
        let ids = Int64Array::from_iter((0..n as i64).map(|i| (i % 5 != 0).then_some(i)));
        let text = StringArray::from_iter((0..n).map(|i| (i % 7 != 3).then(|| format!("t{i}"))));
        let keys = arrow::array::Int32Array::from_iter_values((0..n).map(|i| (i % 3) as i32));
        let values = Arc::new(StringArray::from(vec!["anchor", "positive", "negative"]));
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        let floats = Float32Array::from_iter_values((0..n * 8).map(|i| i as f32 * 0.5));
        let emb = FixedSizeListArray::new(
            Arc::new(Field::new_list_field(DataType::Float32, false)),
            8,
            Arc::new(floats),
            None,
        );
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..n).map(|i| (i % 4 != 1).then(|| (0..(i % 3) as i32).map(Some).collect::<Vec<_>>())),
        );
        let flags = BooleanArray::from_iter((0..n).map(|i| (i % 6 != 2).then_some(i % 2 == 0)));
        let st = StructArray::from(vec![
            (
                Arc::new(Field::new("flag", DataType::Boolean, true)),
                Arc::new(flags) as ArrayRef,
            ),
            (
                Arc::new(Field::new("n", DataType::Int64, true)),
                Arc::new(ids.clone()) as ArrayRef,
            ),
        ]);
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(ids) as ArrayRef),
            ("text", Arc::new(text)),
            ("kind", Arc::new(dict)),
            ("embedding", Arc::new(emb)),
            ("list", Arc::new(list)),
            ("st", Arc::new(st)),
        ])
        .unwrap()
    }

    use arrow::datatypes::DataType;

    /// Decodes the schema and `e`'s messages as an IPC stream, framed as the spool frames them.
    fn decode(schema: &Schema, e: &EncodedBatch) -> RecordBatch {
        let mut stream = Vec::new();
        for m in std::iter::once(BatchEncoder::new().schema(schema)).chain(e.messages().to_vec()) {
            super::super::spool::write_framed(&mut stream, &m).unwrap();
        }
        let mut got: Vec<RecordBatch> =
            arrow::ipc::reader::StreamReader::try_new(stream.as_slice(), None)
                .unwrap()
                .map(Result::unwrap)
                .collect();
        assert_eq!(got.len(), 1);
        got.remove(0)
    }

    #[test]
    fn batches_and_odd_slices_decode_to_themselves_with_arrows_own_body_bytes() {
        let whole = batch(5000);
        let schema = whole.schema();
        let enc = BatchEncoder::new();
        for (off, len) in [
            (0, 5000),
            (0, 0),
            (1, 256),
            (13, 1000),
            (4097, 903),
            (4999, 1),
        ] {
            let b = whole.slice(off, len);
            let e = enc.encode(&b).unwrap();
            assert_eq!(e.rows(), len);
            assert_eq!(e.messages().len(), 2, "one dictionary, then the batch");
            assert_eq!(decode(&schema, &e), b, "slice {off}+{len}");
            // The same body bytes as arrow's contiguous encoder.
            let (generator, options) = (IpcDataGenerator::default(), IpcWriteOptions::default());
            let mut tracker = DictionaryTracker::new(false);
            generator.schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options);
            let (dicts, data) = generator
                .encode(&b, &mut tracker, &options, &mut IpcWriteContext::default())
                .unwrap();
            let ours: Vec<FlightData> = e.messages().iter().map(Message::to_flight_data).collect();
            assert_eq!(ours[0].data_body.as_ref(), dicts[0].arrow_data.as_slice());
            assert_eq!(ours[1].data_body.as_ref(), data.arrow_data.as_slice());
        }
    }

    #[test]
    fn large_buffers_are_sent_from_the_batchs_memory() {
        let b = batch(5000);
        let e = BatchEncoder::new().encode(&b).unwrap();
        let body = &e.messages()[1].body;
        let floats = b.column(3).to_data().child_data()[0].buffers()[0].clone();
        let range = floats.as_ptr() as usize..floats.as_ptr() as usize + floats.len();
        assert!(
            body.iter()
                .any(|c| c.len() == floats.len() && range.contains(&(c.as_ptr() as usize))),
            "the embedding values are one chunk pointing into the batch"
        );
        // Small pieces are gathered: no two chunks in a row are shorter than the threshold.
        assert!(
            body.windows(2)
                .all(|w| w[0].len() >= GATHER_BELOW || w[1].len() >= GATHER_BELOW),
            "{:?}",
            body.iter().map(Bytes::len).collect::<Vec<_>>()
        );
    }
}
