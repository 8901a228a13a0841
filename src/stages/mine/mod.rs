//! `type: mine` — pairs, triplets and n-tuples with class-balanced sampling, hard / semi-hard /
//! rank-range negatives and false-negative guards. Definitions: `docs/MINING.md`.
//!
//! A *stream* stage (stateful). `scope: global` and any sampler consume the whole input first
//! (embeddings in one contiguous `f32` buffer, at most `scope.max_records` records), then emit;
//! `batch`, `window` and `memory_bank` without a sampler emit one output batch per input batch
//! as they go. Sampler-formed training batches are emitted one RecordBatch per training batch,
//! with schema metadata `tripline.training_batch = "true"`.
//!
//! Scoring runs on `threads` blocking threads (not the async runtime); output is identical
//! for any thread count. Dropping the stream cancels scoring between blocks.
//!
//! The report (`mining_report.json`, `report.html`) is written when the input ends, into every
//! output directory of the `parquet_shards` sinks downstream of the stage, or into the current
//! directory when there is none.

mod config;
pub mod guards;
pub mod kernel;
pub mod output;
pub mod report;
pub mod sampler;
pub mod scope;
pub mod triplet_margin;

pub use config::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray};
use arrow::datatypes::{DataType, Float32Type, Int64Type, SchemaRef};
use futures::StreamExt;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::batch::Batch;
use crate::config::OnError;
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;
use guards::Guards;
use kernel::{KernelParams, Rows, Rules};
use output::{Member, MinedRow, OutputSpec};
use report::Stats;
use scope::{Classes, NO_CLASS, Store, payload_hash, value_bytes};
use triplet_margin::{Relation, Triplet};

fn is_vector(t: &DataType) -> bool {
    matches!(t, DataType::FixedSizeList(f, _) if f.data_type() == &DataType::Float32)
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

fn is_label(t: &DataType) -> bool {
    t.is_integer() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn emb_name(cfg: &MineStageConfig, which: &str) -> String {
    match which {
        "anchor" => cfg
            .anchor_embedding
            .clone()
            .unwrap_or_else(|| format!("{}_embedding", cfg.anchor.as_deref().unwrap_or("anchor"))),
        _ => cfg.positive_embedding.clone().unwrap_or_else(|| {
            format!(
                "{}_embedding",
                cfg.positive.as_deref().unwrap_or("positive")
            )
        }),
    }
}

/// What every embedding column must be, for messages.
const VECTOR: &str = "a vector column (FixedSizeList<Float32, D>)";

/// The dimension of `column` when it is a fixed-size list.
fn list_size(schema: &SchemaRef, column: &str) -> Option<i32> {
    match schema.field_with_name(column).ok()?.data_type() {
        DataType::FixedSizeList(_, d) => Some(*d),
        _ => None,
    }
}

/// An optional id column: when present, it must be an integer column.
fn optional_id(schema: &SchemaRef, column: &str, key: Vec<String>, p: &mut Vec<PlanProblem>) {
    if schema.field_with_name(column).is_ok() {
        super::require_column(schema, column, key, "an integer column", is_int, p);
    }
}

/// The corpus's payload column and embedding column names.
fn corpus_columns(cfg: &MineStageConfig, c: &CorpusConfig) -> (String, String) {
    let col = c
        .column
        .clone()
        .or_else(|| cfg.positive.clone())
        .unwrap_or_else(|| "positive".into());
    let emb = c
        .embedding
        .clone()
        .unwrap_or_else(|| format!("{col}_embedding"));
    (col, emb)
}

/// Checks the `corpus` input's schema against the pairs' (`input`).
fn check_corpus(
    cfg: &MineStageConfig,
    c: &CorpusConfig,
    input: &SchemaRef,
    corpus: &SchemaRef,
    p: &mut Vec<PlanProblem>,
) {
    use super::require_column;
    let key = |s: &str| vec!["corpus".to_string(), s.to_string()];
    let (col, emb) = corpus_columns(cfg, c);
    let positive = cfg
        .positive
        .as_ref()
        .and_then(|n| input.field_with_name(n).ok())
        .map(|f| f.data_type().clone());
    let want = match &positive {
        Some(t) => format!("the positive column's type ({t}): corpus rows become negatives"),
        None => "the positive column's type".into(),
    };
    require_column(
        corpus,
        &col,
        key("column"),
        &want,
        |t| positive.as_ref().is_none_or(|p| p == t),
        p,
    );
    require_column(corpus, &emb, key("embedding"), VECTOR, is_vector, p);
    let pe = emb_name(cfg, "positive");
    if let (Some(da), Some(db)) = (list_size(corpus, &emb), list_size(input, &pe))
        && da != db
    {
        p.push((
            key("embedding"),
            format!("`{emb}` has {da} dimensions but the pairs' `{pe}` has {db}"),
        ));
    }
    optional_id(corpus, &c.id, key("id"), p);
}

fn window(cfg: &NegativesConfig) -> (usize, usize) {
    let (min, max) = cfg.range.unwrap_or((0, None));
    (min, max.unwrap_or(min + cfg.num_negatives))
}

/// The output layout for `cfg` on `input`.
fn output_spec(cfg: &MineStageConfig, input: &SchemaRef) -> OutputSpec {
    let ty = |c: &Option<String>| {
        c.as_ref()
            .and_then(|c| input.field_with_name(c).ok())
            .map(|f| f.data_type().clone())
    };
    let (anchor_type, candidate_type) = match cfg.mode {
        MineMode::Labelled => (ty(&cfg.payload), ty(&cfg.payload)),
        MineMode::Paired => (ty(&cfg.anchor), ty(&cfg.positive)),
    };
    OutputSpec {
        format: cfg.output.format,
        scores: cfg.output.scores,
        num_negatives: cfg.negatives.num_negatives,
        anchor_type,
        candidate_type,
        training_batch: matches!(cfg.sampler, SamplerConfig::MPerClass(_)),
    }
}

/// The schema this stage emits for `input`.
///
/// # Errors
/// Every problem found, with its key path inside the component: missing or mistyped columns,
/// settings that contradict each other.
pub fn output_schema(
    cfg: &MineStageConfig,
    input: &SchemaRef,
    corpus: Option<&SchemaRef>,
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    use super::require_column;
    let mut p: Vec<PlanProblem> = Vec::new();
    let k = |s: &str| vec![s.to_string()];
    let kk = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
    match cfg.mode {
        MineMode::Labelled => {
            if cfg.corpus.is_some() {
                p.push((
                    k("corpus"),
                    "`corpus` belongs to paired mode (labelled mode searches its own records)"
                        .into(),
                ));
            }
            require_column(input, &cfg.id, k("id"), "an integer column", is_int, &mut p);
            match &cfg.embedding {
                Some(e) => require_column(input, e, k("embedding"), VECTOR, is_vector, &mut p),
                None => p.push((vec![], "labelled mode needs `embedding`".into())),
            }
            match (&cfg.label, cfg.positives) {
                (Some(l), _) => require_column(
                    input,
                    l,
                    k("label"),
                    "an integer or string column",
                    is_label,
                    &mut p,
                ),
                (None, PositivesConfig::Label) => p.push((
                    vec![],
                    "labelled mode needs `label` (or `positives: views` with `view`)".into(),
                )),
                _ => {}
            }
            if cfg.positives == PositivesConfig::Views {
                match &cfg.view {
                    Some(v) => {
                        require_column(input, v, k("view"), "an integer column", is_int, &mut p)
                    }
                    None => p.push((k("positives"), "`positives: views` needs `view`".into())),
                }
            } else if let Some(v) = &cfg.view {
                require_column(input, v, k("view"), "an integer column", is_int, &mut p);
            }
            if let Some(c) = &cfg.payload {
                require_column(input, c, k("payload"), "any type", |_| true, &mut p);
            }
            if let SamplerConfig::MPerClass(s) = &cfg.sampler {
                if cfg.label.is_none() {
                    p.push((k("sampler"), "`m_per_class` needs `label`".into()));
                }
                if s.m == 0 {
                    p.push((kk("sampler", "m"), "must be at least 1".into()));
                }
                if s.classes_per_batch == 0 {
                    p.push((
                        kk("sampler", "classes_per_batch"),
                        "must be at least 1".into(),
                    ));
                }
            }
        }
        MineMode::Paired => {
            match (&cfg.anchor, &cfg.positive) {
                (Some(a), Some(b)) => {
                    require_column(input, a, k("anchor"), "any type", |_| true, &mut p);
                    require_column(input, b, k("positive"), "any type", |_| true, &mut p);
                }
                _ => p.push((vec![], "paired mode needs `anchor` and `positive`".into())),
            }
            let ae = emb_name(cfg, "anchor");
            let pe = emb_name(cfg, "positive");
            require_column(input, &ae, k("anchor_embedding"), VECTOR, is_vector, &mut p);
            require_column(
                input,
                &pe,
                k("positive_embedding"),
                VECTOR,
                is_vector,
                &mut p,
            );
            if let (Some(da), Some(db)) = (list_size(input, &ae), list_size(input, &pe))
                && da != db
            {
                p.push((
                    k("positive_embedding"),
                    format!("`{pe}` has {db} dimensions but `{ae}` has {da}"),
                ));
            }
            optional_id(input, &cfg.id, k("id"), &mut p);
            if !matches!(cfg.scope, ScopeConfig::Global { .. }) {
                p.push((
                    k("scope"),
                    "paired mode mines over `scope: {type: global}`".into(),
                ));
            }
            if !matches!(cfg.sampler, SamplerConfig::None) {
                p.push((k("sampler"), "paired mode has no sampler".into()));
            }
            if cfg.negatives.strategy.is_in_scope_miner() {
                p.push((
                    kk("negatives", "strategy"),
                    "paired mode supports `hard` and `random`".into(),
                ));
            }
            if let (Some(c), Some(cs)) = (&cfg.corpus, corpus) {
                check_corpus(cfg, c, input, cs, &mut p);
            }
        }
    }
    let n = &cfg.negatives;
    if n.num_negatives == 0 {
        p.push((
            kk("negatives", "num_negatives"),
            "must be at least 1".into(),
        ));
    }
    if let Some((min, max)) = n.range {
        match max {
            Some(max) if max <= min => p.push((
                kk("negatives", "range"),
                format!("range [{min}, {max}) is empty: max must exceed min"),
            )),
            Some(max) if max - min < n.num_negatives => p.push((
                kk("negatives", "range"),
                format!(
                    "range [{min}, {max}) holds {} candidates, fewer than num_negatives = {}",
                    max - min,
                    n.num_negatives
                ),
            )),
            None if n.sampling == Sampling::Random => p.push((
                kk("negatives", "range"),
                "`sampling: random` needs a range maximum".into(),
            )),
            _ => {}
        }
    } else if n.sampling == Sampling::Random && n.strategy == Strategy::Hard {
        p.push((
            kk("negatives", "range"),
            "`sampling: random` needs `range: [min, max]`".into(),
        ));
    }
    if n.strategy.is_in_scope_miner() {
        if matches!(cfg.scope, ScopeConfig::Global { .. }) {
            p.push((
                k("scope"),
                format!(
                    "strategy `{}` enumerates triplets inside a scope: use `batch`, `window` or `memory_bank`",
                    serde_json::to_value(n.strategy).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ),
            ));
        }
        if cfg.output.format != OutputFormat::Triplet {
            p.push((
                kk("output", "format"),
                "the pytorch-metric-learning strategies produce `triplet` rows".into(),
            ));
        }
    }
    match cfg.scope {
        ScopeConfig::Window { size: 0 } | ScopeConfig::MemoryBank { size: 0 } => {
            p.push((kk("scope", "size"), "must be at least 1".into()))
        }
        ScopeConfig::Global { max_records: 0 } => {
            p.push((kk("scope", "max_records"), "must be at least 1".into()))
        }
        _ => {}
    }
    for (key, v) in [
        ("query_block", cfg.query_block),
        ("candidate_block", cfg.candidate_block),
    ] {
        if v == 0 {
            p.push((k(key), "must be at least 1".into()));
        }
    }
    if cfg.output.batch_anchors == 0 {
        p.push((kk("output", "batch_anchors"), "must be at least 1".into()));
    }
    if cfg.threads == Some(0) {
        p.push((k("threads"), "must be at least 1".into()));
    }
    if p.is_empty() {
        Ok(output_spec(cfg, input).schema())
    } else {
        Err(p)
    }
}

/// Builds the stage's lazy output stream over `input` and, in paired mode with `corpus`, the
/// corpus input (both read at once).
///
/// # Errors
/// None at build time (the configuration was validated); errors travel in the stream: bad rows
/// under `on_error: fail`, more records than `scope.max_records`, a sampler that cannot form
/// batches, a report that cannot be written.
pub fn build(
    name: &str,
    cfg: &MineStageConfig,
    input: BatchStream,
    corpus: Option<BatchStream>,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    let cancel = Arc::new(AtomicBool::new(false));
    let miner = Miner {
        name: Arc::from(name),
        cfg: Arc::new(cfg.clone()),
        seed: ctx.seed,
        threads: cfg.threads.unwrap_or(ctx.pool.threads()).max(1),
        store: Store::default(),
        paired: Paired::default(),
        classes: Classes::default(),
        stats: Stats::default(),
        spec: None,
        cancel: cancel.clone(),
        quarantine: ctx.quarantine.clone(),
        metrics: metrics.clone(),
        rows_seen: 0,
        history: Vec::new(),
        members_cache: None,
    };
    let dirs: Vec<std::path::PathBuf> = ctx.output_dirs.get(name).cloned().unwrap_or_default();
    Ok(Box::pin(async_stream::try_stream! {
        let _cancel_on_drop = CancelOnDrop(cancel);
        // Pairs and corpus are read at once (so the two may share an upstream); the corpus
        // joins the candidates only when both have ended, so the result does not depend on how
        // their batches interleave.
        let corpus = corpus.unwrap_or_else(|| futures::stream::empty().boxed());
        let mut input = futures::stream::select(
            input.map(|b| (false, b)),
            corpus.map(|b| (true, b)),
        );
        let mut miner = miner;
        let streaming = matches!(miner.cfg.sampler, SamplerConfig::None)
            && !matches!(miner.cfg.scope, ScopeConfig::Global { .. });
        let mut seq = 0u64;
        let mut origin: Arc<str> = Arc::from(format!("mine:{}", miner.name).as_str());
        while let Some((is_corpus, b)) = input.next().await {
            let b = b?;
            miner.metrics.rows_in.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            if !is_corpus {
                origin = b.meta.origin.clone();
            }
            let (m, out) = blocking(move || {
                let mut m = miner;
                let t = Instant::now();
                let r = if is_corpus {
                    m.ingest_corpus(&b).map(|_| Vec::new())
                } else {
                    m.ingest(&b).and_then(|new| if streaming { m.mine_streaming(new) } else { Ok(Vec::new()) })
                };
                m.metrics.busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                (m, r)
            }).await?;
            miner = m;
            for rb in out? {
                yield Batch::new(rb, seq, origin.clone(), 0);
                seq += 1;
            }
        }
        if !streaming {
            let (m, plan) = blocking(move || {
                let mut m = miner;
                let r = m.plan_offline();
                (m, r)
            }).await?;
            miner = m;
            for step in plan? {
                let (m, out) = blocking(move || {
                    let mut m = miner;
                    let t = Instant::now();
                    let r = m.run_step(step);
                    m.metrics.busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    (m, r)
                }).await?;
                miner = m;
                if let Some(rb) = out? {
                    yield Batch::new(rb, seq, origin.clone(), 0);
                    seq += 1;
                }
            }
        }
        miner.finish(&dirs)?;
    }))
}

struct CancelOnDrop(Arc<AtomicBool>);
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("mine: scoring thread failed: {e}")))
}

/// One unit of offline work: a set of anchors, their candidates, one output batch.
#[derive(Debug)]
enum Step {
    /// Labelled: anchors (record, chosen positive) against a candidate set.
    Labelled {
        anchors: Vec<(usize, Option<usize>)>,
        candidates: Candidates,
    },
    /// Paired: groups `start..end` (with their rows).
    Paired { start: usize, end: usize },
}

#[derive(Debug, Clone)]
enum Candidates {
    All,
    Some(Vec<usize>),
}

/// Paired-mode state: deduplicated anchors (queries) and candidates (positives).
#[derive(Debug, Default)]
struct Paired {
    anchors: Store,
    cands: Store,
    anchor_by_hash: HashMap<u64, Vec<u32>>,
    cand_by_hash: HashMap<u64, Vec<u32>>,
    /// Rows of the extra `corpus` input, held apart until both inputs end.
    corpus: Store,
    /// Whether the corpus has its own id column (else ids follow the pair rows').
    corpus_ids: bool,
    /// Corpus rows read (their positions).
    corpus_seen: u64,
    /// Per group: distinct positives (candidate index, id of the first row pairing them).
    positives: Vec<Vec<(u32, i64)>>,
    /// Per group: its positives' scores, and the reference (smallest) score.
    scores: Vec<Vec<f32>>,
    reference: Vec<f32>,
    hits: Option<kernel::TopK>,
}

struct Miner {
    name: Arc<str>,
    cfg: Arc<MineStageConfig>,
    seed: u64,
    threads: usize,
    store: Store,
    paired: Paired,
    classes: Classes,
    stats: Stats,
    spec: Option<OutputSpec>,
    cancel: Arc<AtomicBool>,
    quarantine: Arc<crate::runtime::quarantine::Quarantine>,
    metrics: Arc<ComponentMetrics>,
    rows_seen: u64,
    /// Records of past training batches (window / memory_bank with a sampler).
    history: Vec<usize>,
    members_cache: Option<Arc<Members>>,
}

/// Records by class and by id (offline positive choice).
#[derive(Debug, Default)]
struct Members {
    by_class: HashMap<u32, Vec<usize>>,
    by_id: HashMap<i64, Vec<usize>>,
}

fn uniq_sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v.dedup();
    v
}

/// The index of a stored record whose payload equals `arr[row]`, among `cands`.
fn find_equal(store: &Store, cands: Option<&Vec<u32>>, arr: &ArrayRef, row: usize) -> Option<u32> {
    let bytes = value_bytes(arr, row);
    cands?.iter().copied().find(|&i| {
        let (slot, r) = store.loc[i as usize];
        match (&store.arrays[slot as usize], bytes) {
            (Some(a), Some(b)) => value_bytes(a, r as usize) == Some(b),
            _ => true,
        }
    })
}

/// Reads row `row` of a vector column: `Err(reason)` when null, non-finite or zero.
fn read_vector(
    col: &FixedSizeListArray,
    row: usize,
    normalize: bool,
    out: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    if col.is_null(row) {
        return Err("the embedding is null".into());
    }
    let value = col.value(row);
    out.clear();
    out.extend_from_slice(value.as_primitive::<Float32Type>().values());
    if out.iter().any(|v| !v.is_finite()) {
        return Err("the embedding has a non-finite value".into());
    }
    if normalize {
        let norm = out
            .iter()
            .map(|v| f64::from(*v) * f64::from(*v))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err("the embedding is all zeros".into());
        }
        let inv = (1.0 / norm) as f32;
        for v in out.iter_mut() {
            *v *= inv;
        }
    }
    Ok(())
}

fn column<'a>(b: &'a Batch, name: &str) -> Result<&'a ArrayRef> {
    b.data.column_by_name(name).ok_or_else(|| {
        Error::Other(format!(
            "{}: column `{name}` is missing from a batch",
            b.meta.origin
        ))
    })
}

/// The optional integer id column `name` of `b`, widened to Int64.
fn optional_ids(b: &Batch, name: &str) -> Result<Option<ArrayRef>> {
    b.data.column_by_name(name).map(as_i64).transpose()
}

fn as_i64(a: &ArrayRef) -> Result<ArrayRef> {
    arrow::compute::cast(a, &DataType::Int64).map_err(|e| Error::arrow("reading ids", e))
}

impl Miner {
    fn bad_row(&mut self, b: &Batch, row: usize, reason: String) -> Result<()> {
        let at = b.meta.first_row + row as u64;
        match self.cfg.on_error {
            OnError::Fail => Err(Error::BadRow {
                origin: b.meta.origin.to_string(),
                row: at,
                reason,
            }),
            OnError::Skip => {
                self.quarantine
                    .write(&self.name, &b.meta.origin, at, &b.data, row, &reason)?;
                self.metrics.rows_skipped.fetch_add(1, Ordering::Relaxed);
                self.stats.rows_skipped += 1;
                Ok(())
            }
        }
    }

    fn limit(&self, held: usize) -> Result<()> {
        if let ScopeConfig::Global { max_records } = self.cfg.scope
            && held > max_records
        {
            return Err(Error::Other(format!(
                "stage `{}`: the input has more than scope.max_records = {max_records} records; raise `scope.max_records` (memory: max_records × dimension × 4 bytes of embeddings)",
                self.name
            )));
        }
        Ok(())
    }

    /// Adds a batch's rows; returns the store indices of the new records (labelled mode).
    fn ingest(&mut self, b: &Batch) -> Result<Vec<usize>> {
        if self.spec.is_none() {
            self.spec = Some(output_spec(&self.cfg, &b.data.schema()));
        }
        match self.cfg.mode {
            MineMode::Labelled => self.ingest_labelled(b),
            MineMode::Paired => self.ingest_paired(b).map(|_| Vec::new()),
        }
    }

    fn ingest_labelled(&mut self, b: &Batch) -> Result<Vec<usize>> {
        let cfg = self.cfg.clone();
        let ids = as_i64(column(b, &cfg.id)?)?;
        let ids = ids.as_primitive::<Int64Type>();
        let labels = match &cfg.label {
            Some(l) => Some(
                arrow::compute::cast(column(b, l)?, &DataType::Utf8)
                    .map_err(|e| Error::arrow("reading labels", e))?,
            ),
            None => None,
        };
        let views = match &cfg.view {
            Some(v) => Some(as_i64(column(b, v)?)?),
            None => None,
        };
        let emb = column(b, cfg.embedding.as_deref().unwrap_or_default())?
            .as_fixed_size_list()
            .clone();
        let payload = match &cfg.payload {
            Some(c) => Some(column(b, c)?.clone()),
            None => None,
        };
        let slot = self.store.add_array(payload.clone());
        let mut v = Vec::new();
        let mut new = Vec::new();
        for row in 0..b.num_rows() {
            if ids.is_null(row) {
                self.bad_row(b, row, format!("column `{}` is null", cfg.id))?;
                continue;
            }
            let class = match &labels {
                Some(l) if l.is_null(row) => {
                    self.bad_row(
                        b,
                        row,
                        format!(
                            "column `{}` is null",
                            cfg.label.as_deref().unwrap_or_default()
                        ),
                    )?;
                    continue;
                }
                Some(l) => self.classes.code(l.as_string::<i32>().value(row)),
                None => NO_CLASS,
            };
            if !self.read_row_vector(
                b,
                row,
                &emb,
                cfg.embedding.as_deref().unwrap_or_default(),
                &mut v,
            )? {
                continue;
            }
            if self.store.dim != 0 && v.len() != self.store.dim {
                self.bad_row(
                    b,
                    row,
                    format!(
                        "embedding has {} dimensions, earlier rows have {}",
                        v.len(),
                        self.store.dim
                    ),
                )?;
                continue;
            }
            let view = views.as_ref().map_or(0, |a| {
                let a = a.as_primitive::<Int64Type>();
                if a.is_null(row) { 0 } else { a.value(row) }
            });
            let hash = payload.as_ref().map_or(0, |p| payload_hash(p, row));
            new.push(self.store.len());
            self.store
                .push(&v, ids.value(row), class, view, hash, (slot, row as u32));
            if class != NO_CLASS {
                self.stats.grow_classes(self.classes.names.len());
                self.stats.records_per_class[class as usize] += 1;
            }
            self.limit(self.store.len())?;
        }
        Ok(new)
    }

    fn ingest_paired(&mut self, b: &Batch) -> Result<()> {
        let cfg = self.cfg.clone();
        let anchor = column(b, cfg.anchor.as_deref().unwrap_or_default())?.clone();
        let positive = column(b, cfg.positive.as_deref().unwrap_or_default())?.clone();
        let ae = column(b, &emb_name(&cfg, "anchor"))?
            .as_fixed_size_list()
            .clone();
        let pe = column(b, &emb_name(&cfg, "positive"))?
            .as_fixed_size_list()
            .clone();
        let ids = optional_ids(b, &cfg.id)?;
        let a_slot = self.paired.anchors.add_array(Some(anchor.clone()));
        let p_slot = self.paired.cands.add_array(Some(positive.clone()));
        let (mut va, mut vp) = (Vec::new(), Vec::new());
        for row in 0..b.num_rows() {
            let ordinal = self.rows_seen as i64;
            self.rows_seen += 1;
            let Some(id) = self.row_id(b, row, ids.as_ref(), &cfg.id, ordinal)? else {
                continue;
            };
            if anchor.is_null(row) || positive.is_null(row) {
                self.bad_row(b, row, "the anchor or the positive is null".into())?;
                continue;
            }
            if !self.read_row_vector(b, row, &ae, &emb_name(&cfg, "anchor"), &mut va)?
                || !self.read_row_vector(b, row, &pe, &emb_name(&cfg, "positive"), &mut vp)?
            {
                continue;
            }
            let dim = self.paired.cands.dim;
            if dim != 0 && va.len() != dim {
                self.bad_row(
                    b,
                    row,
                    format!(
                        "embedding has {} dimensions, earlier rows have {dim}",
                        va.len()
                    ),
                )?;
                continue;
            }
            // Group equal anchors; deduplicate equal positives (exact payload match).
            let ah = payload_hash(&anchor, row);
            let g = find_equal(
                &self.paired.anchors,
                self.paired.anchor_by_hash.get(&ah),
                &anchor,
                row,
            );
            let g = match g {
                Some(g) => g,
                None => {
                    let g = self.paired.anchors.len() as u32;
                    self.paired
                        .anchors
                        .push(&va, id, NO_CLASS, 0, ah, (a_slot, row as u32));
                    self.paired.anchor_by_hash.entry(ah).or_default().push(g);
                    self.paired.positives.push(Vec::new());
                    g
                }
            };
            let ph = payload_hash(&positive, row);
            let c = match find_equal(
                &self.paired.cands,
                self.paired.cand_by_hash.get(&ph),
                &positive,
                row,
            ) {
                Some(c) => c,
                None => {
                    let c = self.paired.cands.len() as u32;
                    self.paired
                        .cands
                        .push(&vp, id, NO_CLASS, 0, ph, (p_slot, row as u32));
                    self.paired.cand_by_hash.entry(ph).or_default().push(c);
                    c
                }
            };
            let pos = &mut self.paired.positives[g as usize];
            if !pos.iter().any(|x| x.0 == c) {
                pos.push((c, id));
            }
            self.limit(self.paired.cands.len().max(self.paired.anchors.len()))?;
        }
        Ok(())
    }

    /// Reads row `row` of the vector column `col` (named `name`) into `out`; a bad vector goes
    /// to `on_error` and gives `Ok(false)`.
    fn read_row_vector(
        &mut self,
        b: &Batch,
        row: usize,
        col: &FixedSizeListArray,
        name: &str,
        out: &mut Vec<f32>,
    ) -> Result<bool> {
        match read_vector(col, row, self.cfg.normalize, out) {
            Ok(()) => Ok(true),
            Err(r) => {
                self.bad_row(b, row, format!("column `{name}`: {r}"))?;
                Ok(false)
            }
        }
    }

    /// Row `row`'s id: from `ids` (the input's id column `name`) when there is one, else
    /// `ordinal`. A null id goes to `on_error` and gives `Ok(None)`.
    fn row_id(
        &mut self,
        b: &Batch,
        row: usize,
        ids: Option<&ArrayRef>,
        name: &str,
        ordinal: i64,
    ) -> Result<Option<i64>> {
        match ids {
            Some(a) if a.is_null(row) => {
                self.bad_row(b, row, format!("column `{name}` is null"))?;
                Ok(None)
            }
            Some(a) => Ok(Some(a.as_primitive::<Int64Type>().value(row))),
            None => Ok(Some(ordinal)),
        }
    }

    /// Holds a batch of the `corpus` input (paired mode) until both inputs end.
    fn ingest_corpus(&mut self, b: &Batch) -> Result<()> {
        let cfg = self.cfg.clone();
        let c = cfg
            .corpus
            .as_ref()
            .expect("a corpus input only with `corpus`");
        let (col, emb) = corpus_columns(&cfg, c);
        let payload = column(b, &col)?.clone();
        let vectors = column(b, &emb)?.as_fixed_size_list().clone();
        let ids = optional_ids(b, &c.id)?;
        self.paired.corpus_ids = ids.is_some();
        let slot = self.paired.corpus.add_array(Some(payload.clone()));
        let mut v = Vec::new();
        for row in 0..b.num_rows() {
            let ordinal = self.paired.corpus_seen as i64;
            self.paired.corpus_seen += 1;
            self.stats.corpus_rows += 1;
            let Some(id) = self.row_id(b, row, ids.as_ref(), &c.id, ordinal)? else {
                continue;
            };
            if payload.is_null(row) {
                self.bad_row(b, row, format!("column `{col}` is null"))?;
                continue;
            }
            if !self.read_row_vector(b, row, &vectors, &emb, &mut v)? {
                continue;
            }
            let h = payload_hash(&payload, row);
            self.paired
                .corpus
                .push(&v, id, NO_CLASS, 0, h, (slot, row as u32));
            self.limit(self.paired.cands.len() + self.paired.corpus.len())?;
        }
        Ok(())
    }

    /// Appends the held corpus rows to the candidates, in corpus order, skipping rows whose
    /// payload equals a positive's or an earlier corpus row's.
    fn merge_corpus(&mut self) -> Result<()> {
        let pd = &mut self.paired;
        let corpus = std::mem::take(&mut pd.corpus);
        if !corpus.is_empty() && corpus.dim != pd.cands.dim {
            return Err(Error::Other(format!(
                "stage `{}`: corpus embeddings have {} dimensions but the pairs' have {}",
                self.name, corpus.dim, pd.cands.dim
            )));
        }
        let offset = if pd.corpus_ids {
            0
        } else {
            self.rows_seen as i64
        };
        let mut slots: HashMap<u32, u32> = HashMap::new();
        for r in 0..corpus.len() {
            let (slot, row) = corpus.loc[r];
            let arr = corpus.arrays[slot as usize]
                .as_ref()
                .expect("corpus rows keep their payload");
            let h = corpus.hash[r];
            if find_equal(&pd.cands, pd.cand_by_hash.get(&h), arr, row as usize).is_some() {
                self.stats.corpus_duplicates += 1;
                continue;
            }
            let cslot = *slots
                .entry(slot)
                .or_insert_with(|| pd.cands.add_array(Some(arr.clone())));
            let c = pd.cands.len() as u32;
            pd.cands.push(
                corpus.row(r),
                corpus.ids[r] + offset,
                NO_CLASS,
                0,
                h,
                (cslot, row),
            );
            pd.cand_by_hash.entry(h).or_default().push(c);
        }
        self.stats.candidates = pd.cands.len() as u64;
        Ok(())
    }

    /// What a record is to anchor `a` (labelled mode).
    fn relation(&self, a: usize, j: usize) -> Relation {
        let s = &self.store;
        if a == j {
            return Relation::Neither;
        }
        match self.cfg.positives {
            PositivesConfig::Views => {
                if s.ids[a] == s.ids[j] {
                    if s.view[a] != s.view[j] {
                        Relation::Positive
                    } else {
                        Relation::Neither
                    }
                } else if s.class[a] != NO_CLASS && s.class[a] == s.class[j] {
                    Relation::Neither
                } else {
                    Relation::Negative
                }
            }
            PositivesConfig::Label => {
                if s.class[a] == s.class[j] {
                    Relation::Positive
                } else {
                    Relation::Negative
                }
            }
        }
    }

    fn rng_for(&self, salt: u64, id: i64, view: i64) -> ChaCha8Rng {
        let mut x = self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = x.wrapping_add((id as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9));
        x ^= (view as u64).wrapping_mul(0x94d0_49bb_1331_11eb);
        ChaCha8Rng::seed_from_u64(x)
    }

    /// A seeded random positive of `a` among `pool` (record indices).
    fn random_positive(&self, a: usize, pool: &[usize]) -> Option<usize> {
        let opts: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&j| self.relation(a, j) == Relation::Positive)
            .collect();
        if opts.is_empty() {
            return None;
        }
        let mut rng = self.rng_for(1, self.store.ids[a], self.store.view[a]);
        Some(opts[rng.random_range(0..opts.len())])
    }

    /// Streaming scopes without a sampler: mine the new records, emit one batch.
    fn mine_streaming(&mut self, new: Vec<usize>) -> Result<Vec<arrow::record_batch::RecordBatch>> {
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let first_new = new[0];
        let (anchors_at, keep_after): (usize, Option<usize>) = match self.cfg.scope {
            ScopeConfig::Batch => {
                self.store.evict_to(self.store.len() - first_new);
                (0, Some(0))
            }
            ScopeConfig::Window { size } => {
                let keep = size.max(new.len());
                let before = self.store.len();
                self.store.evict_to(keep);
                (first_new - (before - self.store.len()), None)
            }
            ScopeConfig::MemoryBank { size } => (first_new, Some(size)),
            ScopeConfig::Global { .. } => unreachable!("global is offline"),
        };
        let all: Vec<usize> = (0..self.store.len()).collect();
        let anchors: Vec<(usize, Option<usize>)> = (anchors_at..self.store.len())
            .map(|a| (a, self.random_positive(a, &all)))
            .collect();
        let rb = self.mine_labelled(&anchors, &Candidates::All)?;
        if let Some(keep) = keep_after {
            self.store.evict_to(keep);
        }
        Ok(rb.into_iter().collect())
    }

    /// Offline: decide the steps (sampler epochs or anchor chunks).
    fn plan_offline(&mut self) -> Result<Vec<Step>> {
        let cfg = self.cfg.clone();
        if self.spec.is_none() || (self.store.is_empty() && self.paired.anchors.is_empty()) {
            return Ok(Vec::new()); // no input rows: nothing to mine
        }
        if cfg.mode == MineMode::Paired {
            self.merge_corpus()?;
            self.prepare_paired()?;
            let n = self.paired.anchors.len();
            let per = cfg.output.batch_anchors;
            return Ok((0..n)
                .step_by(per)
                .map(|s| Step::Paired {
                    start: s,
                    end: (s + per).min(n),
                })
                .collect());
        }
        let n = self.store.len();
        let mut steps = Vec::new();
        match &cfg.sampler {
            SamplerConfig::None => {
                let all: Vec<usize> = (0..n).collect();
                for s in (0..n).step_by(cfg.output.batch_anchors) {
                    let anchors = (s..(s + cfg.output.batch_anchors).min(n))
                        .map(|a| (a, self.random_positive_fast(a, &all)))
                        .collect();
                    steps.push(Step::Labelled {
                        anchors,
                        candidates: Candidates::All,
                    });
                }
            }
            SamplerConfig::MPerClass(sc) => {
                self.stats.grow_classes(self.classes.names.len());
                for e in 0..sc.epochs {
                    let batches = sampler::epoch(
                        &self.store.class,
                        self.classes.names.len(),
                        sc,
                        self.seed,
                        e as u64,
                    )
                    .map_err(|m| Error::Other(format!("stage `{}`: {m}", self.name)))?;
                    for tb in batches {
                        let mut anchors = Vec::with_capacity(tb.records.len());
                        for (gi, _) in tb.classes.iter().enumerate() {
                            let group = &tb.records[gi * sc.m..(gi + 1) * sc.m];
                            for (i, &a) in group.iter().enumerate() {
                                let a = a as usize;
                                let p = (1..sc.m)
                                    .map(|k| group[(i + k) % sc.m] as usize)
                                    .find(|&j| self.relation(a, j) == Relation::Positive);
                                let p = p.or_else(|| self.random_positive_fast(a, &[]));
                                anchors.push((a, p));
                            }
                        }
                        let mut uniq: Vec<usize> = tb.records.iter().map(|&r| r as usize).collect();
                        let candidates = match cfg.scope {
                            ScopeConfig::Global { .. } => Candidates::All,
                            ScopeConfig::Batch => Candidates::Some(uniq_sorted(uniq)),
                            ScopeConfig::Window { size } | ScopeConfig::MemoryBank { size } => {
                                let from = self.history.len().saturating_sub(size);
                                uniq.extend_from_slice(&self.history[from..]);
                                let c = uniq_sorted(uniq);
                                self.history.extend(tb.records.iter().map(|&r| r as usize));
                                let keep_from = self.history.len().saturating_sub(size);
                                self.history.drain(..keep_from);
                                Candidates::Some(c)
                            }
                        };
                        steps.push(Step::Labelled {
                            anchors,
                            candidates,
                        });
                    }
                }
            }
        }
        Ok(steps)
    }

    /// Random positive using per-class member lists over the whole store (global scope).
    fn random_positive_fast(&mut self, a: usize, _pool: &[usize]) -> Option<usize> {
        let members = self.members();
        let s = &self.store;
        let list: &[usize] = match self.cfg.positives {
            PositivesConfig::Label => members
                .by_class
                .get(&s.class[a])
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            PositivesConfig::Views => members
                .by_id
                .get(&s.ids[a])
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        };
        if list.is_empty() {
            return None;
        }
        // A few seeded draws first (O(1) for big classes), then an exact scan.
        let mut rng = self.rng_for(1, s.ids[a], s.view[a]);
        for _ in 0..16 {
            let j = list[rng.random_range(0..list.len())];
            if self.relation(a, j) == Relation::Positive {
                return Some(j);
            }
        }
        let opts: Vec<usize> = list
            .iter()
            .copied()
            .filter(|&j| self.relation(a, j) == Relation::Positive)
            .collect();
        if opts.is_empty() {
            return None;
        }
        Some(opts[rng.random_range(0..opts.len())])
    }

    fn members(&mut self) -> Arc<Members> {
        if self.members_cache.is_none() {
            let mut m = Members::default();
            for r in 0..self.store.len() {
                m.by_class.entry(self.store.class[r]).or_default().push(r);
                m.by_id.entry(self.store.ids[r]).or_default().push(r);
            }
            self.members_cache = Some(Arc::new(m));
        }
        self.members_cache.clone().expect("just set")
    }
}

/// Exclusions and guard bounds for labelled-mode hard negatives.
struct LabelledRules<'a> {
    miner: &'a Miner,
    anchors: &'a [(usize, usize)],
    upper: Vec<[f32; 3]>,
    cand_rec: Option<&'a [usize]>,
}

impl Rules for LabelledRules<'_> {
    fn excluded(&self, q: usize, c: usize) -> bool {
        let rec = self.cand_rec.map_or(c, |m| m[c]);
        let (a, p) = self.anchors[q];
        let s = &self.miner.store;
        self.miner.relation(a, rec) != Relation::Negative
            || s.same_payload(rec, a)
            || s.same_payload(rec, p)
    }
    fn upper(&self, q: usize) -> [f32; 3] {
        self.upper[q]
    }
}

/// Paired-mode rules: a group's positives are never its negatives.
struct PairedRules<'a> {
    positives: &'a [Vec<u32>],
    upper: Vec<[f32; 3]>,
}

impl Rules for PairedRules<'_> {
    fn excluded(&self, q: usize, c: usize) -> bool {
        self.positives[q].binary_search(&(c as u32)).is_ok()
    }
    fn upper(&self, q: usize) -> [f32; 3] {
        self.upper[q]
    }
}

impl Miner {
    fn params(&self) -> KernelParams {
        KernelParams {
            threads: self.threads,
            query_block: self.cfg.query_block,
            candidate_block: self.cfg.candidate_block,
        }
    }

    fn member(&self, r: usize) -> Member {
        let (slot, row) = self.store.loc[r];
        Member {
            id: self.store.ids[r],
            slot,
            row,
        }
    }

    fn run_step(&mut self, step: Step) -> Result<Option<arrow::record_batch::RecordBatch>> {
        match step {
            Step::Labelled {
                anchors,
                candidates,
            } => self.mine_labelled(&anchors, &candidates),
            Step::Paired { start, end } => self.mine_paired(start, end).map(Some),
        }
    }

    fn emit(
        &mut self,
        rows: &[MinedRow],
        anchors_arrays: &[Option<ArrayRef>],
        cand_arrays: &[Option<ArrayRef>],
    ) -> Result<arrow::record_batch::RecordBatch> {
        let spec = self.spec.clone().expect("spec set at first batch");
        let (rb, dropped) = spec.build(rows, anchors_arrays, cand_arrays)?;
        self.stats.rows_dropped += dropped as u64;
        self.stats.rows_out += rb.num_rows() as u64;
        for r in rows {
            if spec.format == OutputFormat::NTuple && r.negatives.len() < spec.num_negatives {
                continue;
            }
            self.stats.positive_scores.add(r.positive_score);
            for &(_, s) in &r.negatives {
                self.stats.negative_scores.add(s);
                self.stats.differences.add(r.positive_score - s);
            }
        }
        Ok(rb)
    }

    /// Mines `anchors` (record, positive) against `candidates`; one output batch.
    fn mine_labelled(
        &mut self,
        anchors: &[(usize, Option<usize>)],
        candidates: &Candidates,
    ) -> Result<Option<arrow::record_batch::RecordBatch>> {
        let cfg = self.cfg.clone();
        let n = &cfg.negatives;
        let guards = Guards::from_config(n);
        let cand_list: Vec<usize> = match candidates {
            Candidates::All => (0..self.store.len()).collect(),
            Candidates::Some(v) => v.clone(),
        };
        let mut rows: Vec<MinedRow> = Vec::new();
        let dim = self.store.dim;
        for &(a, p) in anchors {
            self.stats.anchors += 1;
            let c = self.store.class[a];
            if c != NO_CLASS {
                self.stats.grow_classes(self.classes.names.len());
                self.stats.anchors_per_class[c as usize] += 1;
            }
            if p.is_none() && !n.strategy.is_in_scope_miner() {
                self.stats.anchors_without_positive += 1;
            }
        }
        let with_pos: Vec<(usize, usize)> = anchors
            .iter()
            .filter_map(|&(a, p)| p.map(|p| (a, p)))
            .collect();
        let ap: Vec<f32> = with_pos
            .iter()
            .map(|&(a, p)| kernel::dot(self.store.row(a), self.store.row(p)))
            .collect();
        match n.strategy {
            Strategy::Hard => {
                let (min, max) = window(n);
                let upper: Vec<[f32; 3]> = ap.iter().map(|&s| guards.upper(s)).collect();
                let query_rows: Vec<u32> = with_pos.iter().map(|&(a, _)| a as u32).collect();
                let gathered;
                let cand_ids_g;
                let (cands, cand_ids, cand_rec): (Rows<'_>, &[i64], Option<&[usize]>) =
                    match candidates {
                        Candidates::All => (
                            Rows {
                                data: &self.store.emb,
                                dim,
                            },
                            &self.store.ids,
                            None,
                        ),
                        Candidates::Some(v) => {
                            let mut g = Vec::with_capacity(v.len() * dim);
                            for &r in v {
                                g.extend_from_slice(self.store.row(r));
                            }
                            gathered = g;
                            cand_ids_g = v.iter().map(|&r| self.store.ids[r]).collect::<Vec<_>>();
                            (
                                Rows {
                                    data: &gathered,
                                    dim,
                                },
                                &cand_ids_g,
                                Some(v.as_slice()),
                            )
                        }
                    };
                let rules = LabelledRules {
                    miner: self,
                    anchors: &with_pos,
                    upper,
                    cand_rec,
                };
                let top = kernel::topk(
                    Rows {
                        data: &self.store.emb,
                        dim,
                    },
                    Some(&query_rows),
                    cands,
                    cand_ids,
                    max,
                    guards.lower(),
                    &rules,
                    self.params(),
                    Some(&self.cancel),
                )
                .ok_or_else(|| Error::Other("mine: cancelled".into()))?;

                for (q, &(a, p)) in with_pos.iter().enumerate() {
                    let hits = top.of(q);
                    let win = if hits.len() > min {
                        &hits[min..]
                    } else {
                        &[][..]
                    };
                    let chosen = self.pick(win, a);
                    let negatives: Vec<(usize, f32)> = chosen
                        .iter()
                        .map(|h| {
                            (
                                cand_rec.map_or(h.cand as usize, |m| m[h.cand as usize]),
                                h.score,
                            )
                        })
                        .collect();
                    rows.push(self.labelled_row(a, p, ap[q], negatives));
                }
                for (d, n) in self.stats.guard_drops.iter_mut().zip(top.guard_drops) {
                    *d += n;
                }
            }
            Strategy::Random => {
                for (q, &(a, p)) in with_pos.iter().enumerate() {
                    let [u0, u1, u2] = guards.upper(ap[q]);
                    let hi = u0.min(u1).min(u2);
                    let mut rng = self.rng_for(2, self.store.ids[a], self.store.view[a]);
                    let mut got: Vec<(usize, f32)> = Vec::new();
                    let mut tries = 0;
                    while got.len() < n.num_negatives
                        && tries < 64 * n.num_negatives
                        && !cand_list.is_empty()
                    {
                        tries += 1;
                        let r = cand_list[rng.random_range(0..cand_list.len())];
                        if got.iter().any(|g| g.0 == r)
                            || self.relation(a, r) != Relation::Negative
                            || self.store.same_payload(r, a)
                            || self.store.same_payload(r, p)
                        {
                            continue;
                        }
                        let s = kernel::dot(self.store.row(a), self.store.row(r));
                        if s > hi {
                            for (g, u) in [u0, u1, u2].iter().enumerate() {
                                self.stats.guard_drops[g] += u64::from(s > *u);
                            }
                            continue;
                        }
                        if s < guards.lower() {
                            continue;
                        }
                        got.push((r, s));
                    }
                    let negatives = got;
                    rows.push(self.labelled_row(a, p, ap[q], negatives));
                }
            }
            Strategy::Semihard | Strategy::TripletMargin | Strategy::BatchHard => {
                let kind = if n.strategy == Strategy::Semihard {
                    TripletKind::Semihard
                } else {
                    n.triplets
                };
                let anchor_idx: Vec<u32> = {
                    let pos: HashMap<usize, u32> = cand_list
                        .iter()
                        .enumerate()
                        .map(|(i, &r)| (r, i as u32))
                        .collect();
                    let mut v: Vec<u32> = anchors
                        .iter()
                        .filter_map(|&(a, _)| pos.get(&a).copied())
                        .collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                };
                let score = |i: u32, j: u32| {
                    kernel::dot(
                        self.store.row(cand_list[i as usize]),
                        self.store.row(cand_list[j as usize]),
                    )
                };
                let relation =
                    |i: u32, j: u32| self.relation(cand_list[i as usize], cand_list[j as usize]);
                let trips: Vec<Triplet> = if n.strategy == Strategy::BatchHard {
                    triplet_margin::batch_hard(&anchor_idx, cand_list.len(), &score, &relation)
                } else {
                    triplet_margin::triplet_margin(
                        &anchor_idx,
                        cand_list.len(),
                        &score,
                        &relation,
                        n.margin,
                        kind,
                        n.distance,
                    )
                };
                for t in trips {
                    let (a, p, ng) = (
                        cand_list[t.a as usize],
                        cand_list[t.p as usize],
                        cand_list[t.n as usize],
                    );
                    rows.push(self.labelled_row(a, p, t.ap, vec![(ng, t.an)]));
                }
            }
        }
        if rows.is_empty() && anchors.is_empty() {
            return Ok(None);
        }
        let arrays = self.store.arrays.clone();
        self.emit(&rows, &arrays, &arrays).map(Some)
    }

    fn labelled_row(
        &mut self,
        a: usize,
        p: usize,
        ap: f32,
        negatives: Vec<(usize, f32)>,
    ) -> MinedRow {
        if !self.cfg.negatives.strategy.is_in_scope_miner()
            && negatives.len() < self.cfg.negatives.num_negatives
        {
            self.stats.anchors_without_enough_negatives += 1;
        }
        let c = self.store.class[p];
        if c != NO_CLASS {
            self.stats.positives_per_class[c as usize] += 1;
        }
        for &(r, _) in &negatives {
            let c = self.store.class[r];
            if c != NO_CLASS {
                self.stats.negatives_per_class[c as usize] += 1;
            }
        }
        MinedRow {
            anchor: self.member(a),
            positive: self.member(p),
            positive_score: ap,
            negatives: negatives
                .into_iter()
                .map(|(r, s)| (self.member(r), s))
                .collect(),
        }
    }

    /// Chooses negatives from a window of hits (best first): the top ones, or a seeded
    /// uniform sample re-sorted best first.
    fn pick(&self, win: &[kernel::Hit], a_id_source: usize) -> Vec<kernel::Hit> {
        let n = &self.cfg.negatives;
        if n.sampling == Sampling::Top || win.len() <= n.num_negatives {
            return win.iter().take(n.num_negatives).copied().collect();
        }
        let (id, view) = match self.cfg.mode {
            MineMode::Labelled => (self.store.ids[a_id_source], self.store.view[a_id_source]),
            MineMode::Paired => (self.paired.anchors.ids[a_id_source], 0),
        };
        let mut rng = self.rng_for(3, id, view);
        let mut idx: Vec<usize> = (0..win.len()).collect();
        for i in 0..n.num_negatives {
            let j = rng.random_range(i..idx.len());
            idx.swap(i, j);
        }
        let mut picked: Vec<usize> = idx[..n.num_negatives].to_vec();
        picked.sort_unstable();
        picked.into_iter().map(|i| win[i]).collect()
    }

    /// Paired mode: positive scores, reference scores, and one kernel pass for every group.
    fn prepare_paired(&mut self) -> Result<()> {
        let pd = &mut self.paired;
        let cfg = &self.cfg;
        let dim = pd.cands.dim;
        pd.scores = pd
            .positives
            .iter()
            .enumerate()
            .map(|(g, ps)| {
                ps.iter()
                    .map(|&(c, _)| kernel::dot(pd.anchors.row(g), pd.cands.row(c as usize)))
                    .collect()
            })
            .collect();
        pd.reference = pd
            .scores
            .iter()
            .map(|s| s.iter().copied().fold(f32::INFINITY, f32::min))
            .collect();
        let guards = Guards::from_config(&cfg.negatives);
        let sorted: Vec<Vec<u32>> = pd
            .positives
            .iter()
            .map(|ps| {
                uniq_sorted(ps.iter().map(|&(c, _)| c as usize).collect())
                    .into_iter()
                    .map(|c| c as u32)
                    .collect()
            })
            .collect();
        let rules = PairedRules {
            positives: &sorted,
            upper: pd.reference.iter().map(|&p| guards.upper(p)).collect(),
        };
        let (_, max) = window(&cfg.negatives);
        let params = KernelParams {
            threads: self.threads,
            query_block: cfg.query_block,
            candidate_block: cfg.candidate_block,
        };
        let top = kernel::topk(
            Rows {
                data: &pd.anchors.emb,
                dim,
            },
            None,
            Rows {
                data: &pd.cands.emb,
                dim,
            },
            &pd.cands.ids,
            max,
            guards.lower(),
            &rules,
            params,
            Some(&self.cancel),
        )
        .ok_or_else(|| Error::Other("mine: cancelled".into()))?;
        for (d, n) in self.stats.guard_drops.iter_mut().zip(top.guard_drops) {
            *d += n;
        }
        self.metrics
            .set_detail("scratch_bytes", top.scratch_bytes as u64);
        pd.hits = Some(top);
        Ok(())
    }

    fn mine_paired(
        &mut self,
        start: usize,
        end: usize,
    ) -> Result<arrow::record_batch::RecordBatch> {
        let (min, _) = window(&self.cfg.negatives);
        let mut rows = Vec::new();
        let top = self.paired.hits.take().expect("prepared");
        for g in start..end {
            let hits = top.of(g);
            let win = if hits.len() > min {
                &hits[min..]
            } else {
                &[][..]
            };
            let chosen = self.pick(win, g);
            let pd = &self.paired;
            let negatives: Vec<(Member, f32)> = chosen
                .iter()
                .map(|h| {
                    let c = h.cand as usize;
                    let (slot, row) = pd.cands.loc[c];
                    (
                        Member {
                            id: pd.cands.ids[c],
                            slot,
                            row,
                        },
                        h.score,
                    )
                })
                .collect();
            let (aslot, arow) = pd.anchors.loc[g];
            let short = negatives.len() < self.cfg.negatives.num_negatives;
            for (i, &(c, row_id)) in pd.positives[g].iter().enumerate() {
                let (slot, row) = pd.cands.loc[c as usize];
                rows.push(MinedRow {
                    anchor: Member {
                        id: row_id,
                        slot: aslot,
                        row: arow,
                    },
                    positive: Member {
                        id: pd.cands.ids[c as usize],
                        slot,
                        row,
                    },
                    positive_score: pd.scores[g][i],
                    negatives: negatives.clone(),
                });
            }
            self.stats.anchors += pd.positives[g].len() as u64;
            if short {
                self.stats.anchors_without_enough_negatives += pd.positives[g].len() as u64;
            }
        }
        self.paired.hits = Some(top);
        let aa = self.paired.anchors.arrays.clone();
        let ca = self.paired.cands.arrays.clone();
        self.emit(&rows, &aa, &ca)
    }

    fn finish(&mut self, dirs: &[std::path::PathBuf]) -> Result<()> {
        self.stats.classes = self.classes.names.clone();
        self.stats.grow_classes(self.classes.names.len());
        self.metrics.set_detail("mining", self.stats.summary());
        if !self.cfg.report {
            return Ok(());
        }
        let settings = serde_json::to_value(&*self.cfg).unwrap_or_default();
        let dirs: Vec<std::path::PathBuf> = if dirs.is_empty() {
            vec![std::path::PathBuf::from(".")]
        } else {
            dirs.to_vec()
        };
        for d in &dirs {
            self.stats
                .write(d, &self.name, settings.clone())
                .map_err(|e| {
                    Error::Other(format!(
                        "stage `{}`: writing the mining report into {}: {e}",
                        self.name,
                        d.display()
                    ))
                })?;
        }
        self.metrics.set_detail(
            "report",
            dirs.iter()
                .map(|d| d.join("mining_report.json").display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        );
        Ok(())
    }
}
