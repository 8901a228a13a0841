//! The `mine` stage's YAML types. Every name here is a config key users write.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::OnError;

/// `type: mine` — pairs, triplets and n-tuples from labelled records or (anchor, positive)
/// pairs, with class-balanced sampling, hard / semi-hard / rank-range negatives and
/// false-negative guards. See `docs/MINING.md` for every definition.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MineStageConfig {
    /// Upstream components whose output this stage reads.
    pub inputs: Vec<String>,
    /// Capacity in batches of this stage's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
    /// `labelled` (rows carry an id, a label and one embedding) or `paired` (rows carry an
    /// anchor and a positive with one embedding each, sentence-transformers style).
    #[serde(default)]
    pub mode: MineMode,
    /// Integer id column (any integer type). Labelled mode: required. Paired mode: optional;
    /// when the input has no such column, the row's position in the input (from 0) is its id.
    #[serde(default = "default_id")]
    pub id: String,
    /// Labelled mode: the class column (any integer or string type). Rows of the same label
    /// are positives of each other and never negatives.
    #[serde(default)]
    pub label: Option<String>,
    /// Labelled mode: the embedding column, any `FixedSizeList<Float32, D>`.
    #[serde(default)]
    pub embedding: Option<String>,
    /// Labelled mode: the view index column written by `augment` (integer). Needed by
    /// `positives: views`.
    #[serde(default)]
    pub view: Option<String>,
    /// Labelled mode: what counts as a positive — `label` (other records of the same label,
    /// default) or `views` (other views of the same record, same `id`).
    #[serde(default)]
    pub positives: PositivesConfig,
    /// Labelled mode: a payload column (text, image bytes, …) carried into the output as
    /// `anchor`, `positive`, `negative`… so shards are training-ready without a join. Rows whose
    /// payload equals the anchor's or the positive's payload exactly are never negatives.
    #[serde(default)]
    pub payload: Option<String>,
    /// Paired mode: the anchor column (its values are carried as `anchor`; rows with equal
    /// anchors are grouped into one anchor with several positives).
    #[serde(default)]
    pub anchor: Option<String>,
    /// Paired mode: the positive column (carried as `positive`; every positive is also a
    /// candidate negative for the other anchors).
    #[serde(default)]
    pub positive: Option<String>,
    /// Paired mode: the anchor embedding column; default `<anchor>_embedding`.
    #[serde(default)]
    pub anchor_embedding: Option<String>,
    /// Paired mode: the positive embedding column; default `<positive>_embedding`.
    #[serde(default)]
    pub positive_embedding: Option<String>,
    /// Paired mode: an extra candidate corpus read from another component (documents that are
    /// candidate negatives in addition to every positive, like sentence-transformers'
    /// `corpus`). Its rows are deduplicated against the positives and each other by exact
    /// payload match.
    #[serde(default)]
    pub corpus: Option<Box<CorpusConfig>>,
    /// L2-normalise embeddings before scoring (default true), so scores are cosine
    /// similarities. Rows with a zero or non-finite embedding follow `on_error`.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// How anchors are grouped into training batches.
    #[serde(default)]
    pub sampler: SamplerConfig,
    /// Which records are searched for negatives.
    #[serde(default)]
    pub scope: ScopeConfig,
    /// How negatives are chosen, and the false-negative guards.
    #[serde(default)]
    pub negatives: NegativesConfig,
    /// What rows the stage emits.
    #[serde(default)]
    pub output: OutputConfig,
    /// Threads for scoring; default: the pipeline's worker count. The output does not depend
    /// on it.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Query rows per scoring block (memory: `threads × query_block × candidate_block × 4`
    /// bytes of scores).
    #[serde(default = "default_query_block")]
    pub query_block: usize,
    /// Candidate rows per scoring block.
    #[serde(default = "default_candidate_block")]
    pub candidate_block: usize,
    /// What to do with a row that cannot be mined (null id, label or embedding, zero or
    /// non-finite embedding, wrong dimension).
    #[serde(default)]
    pub on_error: OnError,
    /// Write `mining_report.json` and `report.html` (default true).
    #[serde(default = "default_true")]
    pub report: bool,
}

fn default_id() -> String {
    "id".into()
}
fn default_true() -> bool {
    true
}
fn default_query_block() -> usize {
    512
}
fn default_candidate_block() -> usize {
    4096
}

/// `corpus:` — an extra candidate corpus for paired mode, read from its own input.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    /// The source or stage whose rows form the corpus. It is read alongside `inputs` (both
    /// at once, so the two may share an upstream) and must not also be listed there.
    pub input: String,
    /// The payload column (carried into the `negative…` columns; must have the positive
    /// column's type); default: the `positive` column's name.
    #[serde(default)]
    pub column: Option<String>,
    /// The embedding column (same dimension as the pairs'); default `<column>_embedding`.
    #[serde(default)]
    pub embedding: Option<String>,
    /// Integer id column of the corpus; when the corpus has no such column, a corpus row's id is
    /// the number of pair rows plus its position in the corpus input (from 0), so corpus ids
    /// follow the pair ids.
    #[serde(default = "default_id")]
    pub id: String,
}

/// Input mode.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MineMode {
    /// Rows carry `id`, `label` and an embedding (default).
    #[default]
    Labelled,
    /// Rows carry an anchor and a positive, each with its embedding.
    Paired,
}

/// What counts as a positive in labelled mode.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PositivesConfig {
    /// Other records with the same label (default).
    #[default]
    Label,
    /// Other views (same `id`, different `view`) of the same record.
    Views,
}

/// How anchors are grouped into training batches.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    /// No sampler: anchors in input order (default).
    #[default]
    None,
    /// pytorch-metric-learning `MPerClassSampler`-style batches of `classes_per_batch × m`
    /// records, exactly `m` per class; one epoch makes every record an anchor at least once.
    MPerClass(MPerClassConfig),
}

/// Settings of `sampler: {type: m_per_class}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MPerClassConfig {
    /// Records per class in every batch.
    pub m: usize,
    /// Classes per batch (batch size = `classes_per_batch × m`).
    pub classes_per_batch: usize,
    /// Use at most this many records of any class per epoch (the first ones of the seeded
    /// shuffle); the rest are not anchors in that epoch.
    #[serde(default)]
    pub max_per_class: Option<usize>,
    /// `none`: each class appears in proportion to its size. `inverse_frequency`: every class
    /// gets as many groups per epoch as the largest one (small classes repeat, drawn with
    /// replacement), so classes are balanced after sampling.
    #[serde(default)]
    pub weighting: Weighting,
    /// Epochs to emit (default 1).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
}

fn default_epochs() -> usize {
    1
}

/// Class weighting of the `m_per_class` sampler.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Classes appear in proportion to their (capped) size.
    #[default]
    None,
    /// Every class appears equally often.
    InverseFrequency,
}

/// Which records are searched for negatives (and positives, in labelled mode).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScopeConfig {
    /// Inside each batch: the sampler's training batch, or each input batch without sampler.
    Batch,
    /// The last `size` records of the stream, the current batch included.
    Window {
        /// Records kept.
        size: usize,
    },
    /// The current batch plus a FIFO of the `size` records before it (cross-batch memory).
    MemoryBank {
        /// Past records kept.
        size: usize,
    },
    /// The whole input (offline): consumes everything, then emits. Exact top-k by blocked
    /// matrix products; no N×N matrix is ever held.
    Global {
        /// Most records held (embeddings live in one contiguous buffer of
        /// `max_records × D × 4` bytes at most); more is an error naming this key.
        #[serde(default = "default_max_records")]
        max_records: usize,
    },
}

impl Default for ScopeConfig {
    fn default() -> Self {
        ScopeConfig::Global {
            max_records: default_max_records(),
        }
    }
}

fn default_max_records() -> usize {
    10_000_000
}

/// Negative selection and false-negative guards.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NegativesConfig {
    /// The strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// Negatives per anchor (`hard`, `random`).
    #[serde(default = "default_num_negatives")]
    pub num_negatives: usize,
    /// Rank window `[min, max)` over candidates ranked by score, counted after exclusions
    /// and guards (`hard`). `max` may be omitted (then `min + num_negatives` for
    /// `sampling: top`).
    #[serde(default)]
    pub range: Option<(usize, Option<usize>)>,
    /// `top` (the best-ranked in the window) or `random` (uniform within the window, seeded).
    #[serde(default)]
    pub sampling: Sampling,
    /// `triplet_margin`: which triplets (pytorch-metric-learning `type_of_triplets`).
    #[serde(default)]
    pub triplets: TripletKind,
    /// `triplet_margin` / `semihard`: the margin.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// `triplet_margin` / `semihard` / `batch_hard`: `euclidean` (L2 distance of normalised
    /// vectors, pytorch-metric-learning's default) or `cosine` (similarity).
    #[serde(default)]
    pub distance: DistanceKind,
    /// Keep only `s(a,n) ≤ s(a,p) − absolute_margin`.
    #[serde(default)]
    pub absolute_margin: Option<f32>,
    /// Keep only `s(a,n) ≤ s(a,p) − |s(a,p)|·relative_margin` (sign-safe).
    #[serde(default)]
    pub relative_margin: Option<f32>,
    /// Keep only `s(a,n) ≤ max_score`.
    #[serde(default)]
    pub max_score: Option<f32>,
    /// Keep only `s(a,n) ≥ min_score`.
    #[serde(default)]
    pub min_score: Option<f32>,
}

impl Default for NegativesConfig {
    fn default() -> Self {
        NegativesConfig {
            strategy: Strategy::default(),
            num_negatives: default_num_negatives(),
            range: None,
            sampling: Sampling::default(),
            triplets: TripletKind::default(),
            margin: default_margin(),
            distance: DistanceKind::default(),
            absolute_margin: None,
            relative_margin: None,
            max_score: None,
            min_score: None,
        }
    }
}

fn default_num_negatives() -> usize {
    1
}
fn default_margin() -> f32 {
    0.2
}

/// Negative strategies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Uniformly random non-positives (guards apply), seeded per anchor.
    Random,
    /// The most similar non-positives, in the rank window `range` (default).
    #[default]
    Hard,
    /// pytorch-metric-learning `TripletMarginMiner(type_of_triplets="semihard")`.
    Semihard,
    /// pytorch-metric-learning `TripletMarginMiner` with `triplets: all|hard|semihard|easy`.
    TripletMargin,
    /// pytorch-metric-learning `BatchHardMiner`: per anchor the farthest positive and the
    /// closest negative.
    BatchHard,
}

impl Strategy {
    /// Whether this strategy enumerates triplets inside the scope (pytorch-metric-learning
    /// miners), rather than ranking candidates per anchor.
    pub fn is_in_scope_miner(self) -> bool {
        matches!(
            self,
            Strategy::Semihard | Strategy::TripletMargin | Strategy::BatchHard
        )
    }
}

/// How negatives are drawn from the rank window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// The best-ranked (default).
    #[default]
    Top,
    /// Uniformly at random (seeded per anchor).
    Random,
}

/// pytorch-metric-learning `type_of_triplets`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TripletKind {
    /// `m ≤ margin` (default, as pytorch-metric-learning).
    #[default]
    All,
    /// `m ≤ margin` and `m ≤ 0`.
    Hard,
    /// `0 < m ≤ margin`.
    Semihard,
    /// `m > margin`.
    Easy,
}

/// The measure used by the pytorch-metric-learning miners.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DistanceKind {
    /// L2 distance between normalised embeddings (`m = d(a,n) − d(a,p)`).
    #[default]
    Euclidean,
    /// Cosine similarity (`m = s(a,p) − s(a,n)`).
    Cosine,
}

/// What rows the stage emits.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Row format.
    #[serde(default)]
    pub format: OutputFormat,
    /// Add scores as sentence-transformers does: `scores` (`[positive, negative…]`, a list of
    /// Float32) for `triplet`, `n-tuple` and `labeled-list`; `score` for `labeled-pair`.
    #[serde(default)]
    pub scores: bool,
    /// Anchors per output batch when the output is not sampler-formed training batches.
    #[serde(default = "default_batch_anchors")]
    pub batch_anchors: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            format: OutputFormat::default(),
            scores: false,
            batch_anchors: default_batch_anchors(),
        }
    }
}

fn default_batch_anchors() -> usize {
    4096
}

/// Output row formats (sentence-transformers names).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum OutputFormat {
    /// One row per (anchor, positive, negative).
    #[default]
    #[serde(rename = "triplet")]
    Triplet,
    /// One row per (anchor, positive) with `negative_1..negative_n`; rows lacking n negatives
    /// are dropped and counted.
    #[serde(rename = "n-tuple")]
    NTuple,
    /// One row per (anchor, candidate) with `label` 1 (positive) or 0 (negative).
    #[serde(rename = "labeled-pair")]
    LabeledPair,
    /// One row per (anchor, positive): `candidates` (positive first) and `labels`.
    #[serde(rename = "labeled-list")]
    LabeledList,
}

impl OutputFormat {
    /// The YAML spelling.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Triplet => "triplet",
            OutputFormat::NTuple => "n-tuple",
            OutputFormat::LabeledPair => "labeled-pair",
            OutputFormat::LabeledList => "labeled-list",
        }
    }
}
