//! `type: embed` — embeddings from an ONNX model, through ONNX Runtime.
//!
//! For every column `c` in `columns` the stage adds `c_embedding`, a
//! `FixedSizeList<Float32, D>` column, and keeps every input column. What a column holds
//! decides how it reaches the model:
//!
//! * **text** (`Utf8`, `LargeUtf8`): tokenised with `tokenizer` (a HuggingFace
//!   `tokenizer.json`), truncated at `max_length` tokens, fed as `input_ids`,
//!   `attention_mask` and `token_type_ids` — each only when the model declares it, matched
//!   by name — and pooled (`mean` over unmasked tokens, `cls`, or `none`);
//! * **encoded images** (`Binary`, `LargeBinary`): decoded, resized, centre-cropped and
//!   normalised ([`image::ImageOptions`]), laid out NCHW or NHWC after the model's input
//!   shape;
//! * **float vectors or tensors** (`FixedSizeList<Float32>`, `List<Float32>`): fed as they
//!   are, shaped like the model's single float input (an `augment` image tensor column, or
//!   a plain vector).
//!
//! With `normalize: true` every embedding has unit L2 norm.
//!
//! # Checks before running
//! Validation reads the model's signature from the ONNX file (without loading ONNX Runtime)
//! and checks it against the configuration: the inputs the stage can feed, the output and
//! its rank against `pooling`, and the dimension `D` of the new columns. The tokenizer file is
//! loaded as well. Every mismatch is reported with its key.
//!
//! # Speed
//! Rows are gathered into look-ahead windows of `lookahead_rows` rows (whole input
//! batches), sorted by token length within the window, cut into model batches of at most
//! `batch_size` rows padded to their longest row, and restored to input order on output —
//! with short texts, padding to the batch's longest row instead of a fixed length is worth
//! about 10×. Tokenisation runs on its own thread, overlapped with inference; each of the
//! `workers` inference threads owns one ONNX Runtime session (sessions are not shareable).
//! Window boundaries depend only on the input batches, so the output is the same whatever
//! the worker count.
//!
//! # Bad rows
//! A null or empty text, an undecodable image, a null, wrong-length or non-finite vector, and a
//! non-finite embedding follow `on_error`: `fail` stops the pipeline naming the row, `skip`
//! writes the row and the reason to the quarantine and counts it. Texts longer than
//! `max_length` tokens are truncated and counted (`rows_truncated`).
//!
//! # Reported facts
//! `execution_provider` and `device` (what actually ran), `rows_truncated`, `rows_reused`,
//! `padding_tokens` and `padding_tokens_unsorted` (what padding would have cost in input order)
//! with `padding_saved` (the fraction saved by sorting), `dim`, `model`.

pub mod image;
mod onnx_meta;
pub mod ort_env;
mod plan;
pub mod pooling;
mod run;
pub mod session;
pub mod text;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::OnError;
use crate::error::Result;
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

pub use image::ImageOptions;
pub use pooling::Pooling;

/// Suffix of the column each input column's embedding is written to.
pub const EMBEDDING_SUFFIX: &str = "_embedding";

/// Settings of an `embed` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedStageConfig {
    /// Upstream components whose output this stage reads.
    pub inputs: Vec<String>,
    /// Path of the ONNX model (relative paths are relative to the working directory).
    pub model: String,
    /// Path of the HuggingFace `tokenizer.json`; required when a column holds text.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Input columns to embed; each gets a `<column>_embedding` column
    /// (`FixedSizeList<Float32, D>`). Text (`Utf8`/`LargeUtf8`), encoded images
    /// (`Binary`/`LargeBinary`) or float vectors/tensors (`FixedSizeList<Float32>`,
    /// `List<Float32>`).
    pub columns: Vec<String>,
    /// `auto` (CUDA device 0 when it works, otherwise the CPU with one warning), `cpu`,
    /// `cuda` or `cuda:N` (an error when CUDA cannot be used; needs the `onnxruntime-gpu`
    /// library). Default `auto`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Rows per model run (at most). Default 64.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest text in tokens (special tokens included); longer texts are truncated and
    /// counted. Default: the tokenizer file's truncation length, else 512.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// `mean` (masked mean of the token states, default), `cls` (first token) or `none` (the
    /// model's output is already one vector per row).
    #[serde(default)]
    pub pooling: Pooling,
    /// Scale every embedding to unit L2 norm. Default true.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// The model output to read; default: the model's first output.
    #[serde(default)]
    pub output: Option<String>,
    /// The embedding dimension; needed only when the model's output shape does not state it
    /// (checked against the model when it does).
    #[serde(default)]
    pub dim: Option<usize>,
    /// Inference threads, each with its own ONNX Runtime session working on its own model
    /// batches. Default on the CPU: one per core, at most 4 (`threads` set: cores / threads);
    /// on a GPU: 1.
    #[serde(default)]
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per session. Default: available cores divided by
    /// `workers` (so 1 per worker on machines with up to 4 cores).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Rows gathered (whole input batches) before sorting by length and cutting model
    /// batches; bounds the memory the stage holds. Default `64 × batch_size`.
    #[serde(default)]
    pub lookahead_rows: Option<usize>,
    /// When the input already has a `<column>_embedding` column, keep its value for rows
    /// where it is a valid embedding (non-null, `D` finite floats) and run the model only for
    /// the others. Without it, an existing `<column>_embedding` column is a configuration
    /// error.
    #[serde(default)]
    pub reuse_existing: bool,
    /// Preprocessing of encoded images.
    #[serde(default)]
    pub image: ImageOptions,
    /// What to do with a row that cannot be embedded (null or empty text, undecodable image,
    /// NaN in a vector, non-finite embedding).
    #[serde(default)]
    pub on_error: OnError,
    /// Capacity in batches of this stage's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
}

fn default_device() -> String {
    "auto".into()
}

fn default_batch_size() -> usize {
    64
}

fn default_true() -> bool {
    true
}

/// The schema this stage emits for `input`: the input columns, then (or in place of an
/// existing one, with `reuse_existing`) one `<column>_embedding` column per embedded column.
///
/// # Errors
/// Every problem found, with its key path inside the component: missing or unsupported
/// columns, a missing or invalid model or tokenizer file, model inputs the stage cannot feed,
/// an output whose rank does not fit `pooling`, an unknown dimension, bad numbers.
pub fn output_schema(
    cfg: &EmbedStageConfig,
    input: &SchemaRef,
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    plan::analyse(cfg, input).map(|p| p.output_schema)
}

/// Builds the stage's lazy output stream. Nothing is loaded before the first poll: ONNX
/// Runtime, the sessions and the tokenizer are set up then, and a failure there is the
/// stream's first item.
///
/// # Errors
/// When the configuration does not fit the input schema (normally caught by validation).
pub fn build(
    name: &str,
    cfg: &EmbedStageConfig,
    input: BatchStream,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    run::build(name, cfg, input, ctx, metrics)
}
