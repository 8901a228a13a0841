//! The unit that flows between components.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

/// An Arrow [`RecordBatch`] with where it came from.
///
/// Cloning is cheap (Arrow arrays are reference counted), which is how fan-out hands the same
/// batch to several consumers.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The rows.
    pub data: RecordBatch,
    /// Provenance.
    pub meta: BatchMeta,
}

/// Provenance of a [`Batch`].
#[derive(Debug, Clone)]
pub struct BatchMeta {
    /// Position of this batch in its producer's output, from 0.
    pub seq: u64,
    /// The file (or other origin) the rows were read from.
    pub origin: Arc<str>,
    /// Offset of the batch's first row within `origin`.
    pub first_row: u64,
}

impl Batch {
    /// Wraps `data` with provenance.
    pub fn new(data: RecordBatch, seq: u64, origin: Arc<str>, first_row: u64) -> Batch {
        Batch {
            data,
            meta: BatchMeta {
                seq,
                origin,
                first_row,
            },
        }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// The same provenance around different rows.
    pub fn with_data(&self, data: RecordBatch) -> Batch {
        Batch {
            data,
            meta: self.meta.clone(),
        }
    }
}
