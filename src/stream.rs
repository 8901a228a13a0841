//! Streams of batches: the contract between components.
//!
//! A component's output is a [`BatchStream`]. The contract, as in DataFusion's
//! `SendableRecordBatchStream`:
//!
//! * **Lazy**: building a stream does no work; reading, decoding and computing start at the
//!   first poll.
//! * **Cancellation by drop**: dropping a stream stops its work and frees its buffers; threads it
//!   started notice that their output channel closed and exit.
//! * **Errors travel in the stream**: the first `Err` item is the component's failure; a stream
//!   yields nothing after an error.

use std::pin::Pin;

use futures::Stream;

use crate::batch::Batch;
use crate::error::Result;

/// A lazy, cancellable stream of batches.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<Batch>> + Send + 'static>>;
