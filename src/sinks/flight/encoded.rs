//! Batches encoded once as Flight (Arrow IPC) messages. The encoded bytes are reference-counted
//! and shared by the live stream of a rank, its replay buffer and the spool: a batch is encoded
//! once, whatever the number of places it goes to.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightData;
use prost::bytes::Bytes;

/// A record batch encoded as Flight messages: the dictionary batches it needs (none unless a
/// column is dictionary-encoded), then the record batch message. Each batch is self-contained,
/// so batches can be sent in any order and a stream can start at any batch. Cloning shares
/// the bytes.
#[derive(Debug, Clone)]
pub(crate) struct EncodedBatch {
    messages: Arc<[FlightData]>,
    rows: usize,
}

impl EncodedBatch {
    /// Wraps messages (dictionaries first, the record batch last) of a batch of `rows` rows.
    pub(crate) fn new(messages: Vec<FlightData>, rows: usize) -> EncodedBatch {
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
    pub(crate) fn messages(&self) -> &[FlightData] {
        &self.messages
    }

    /// The messages to send, the record batch message carrying `app_metadata`. Only reference
    /// counts change: no byte of the batch is copied.
    pub(crate) fn to_send(&self, app_metadata: Bytes) -> Vec<FlightData> {
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
    context: IpcWriteContext,
}

impl BatchEncoder {
    /// An encoder with the default IPC options (uncompressed, 64-byte alignment).
    pub(crate) fn new() -> BatchEncoder {
        BatchEncoder {
            generator: IpcDataGenerator::default(),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
        }
    }

    /// The IPC options batches are encoded with.
    pub(crate) fn options(&self) -> &IpcWriteOptions {
        &self.options
    }

    /// The schema message that starts a stream of these batches.
    pub(crate) fn schema(&self, schema: &Schema) -> FlightData {
        let mut tracker = DictionaryTracker::new(false);
        let e = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut tracker,
            &self.options,
        );
        FlightData::from(e)
    }

    /// Encodes `batch` once; the body is the one copy of its buffers that every consumer shares.
    ///
    /// # Errors
    /// When Arrow cannot encode the batch.
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<EncodedBatch, ArrowError> {
        // A fresh tracker per batch makes every batch carry its own dictionaries; it learns the
        // dictionary ids from the schema, in the order the schema message assigns them.
        let mut tracker = DictionaryTracker::new(false);
        let schema = batch.schema_ref();
        if schema
            .fields()
            .iter()
            .any(|f| has_dictionary(f.data_type()))
        {
            self.generator.schema_to_bytes_with_dictionary_tracker(
                schema,
                &mut tracker,
                &self.options,
            );
        }
        let (dicts, data) =
            self.generator
                .encode(batch, &mut tracker, &self.options, &mut self.context)?;
        let mut messages: Vec<FlightData> = dicts.into_iter().map(FlightData::from).collect();
        messages.push(FlightData::from(data));
        Ok(EncodedBatch::new(messages, batch.num_rows()))
    }
}

/// Whether a column of this type holds a dictionary-encoded array anywhere.
fn has_dictionary(t: &DataType) -> bool {
    match t {
        DataType::Dictionary(_, _) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fs) => fs.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fs, _) => fs.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(_, v) => has_dictionary(v.data_type()),
        _ => false,
    }
}
