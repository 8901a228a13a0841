//! `type: augment` — augmented views of records on parallel workers.
//!
//! Every input row becomes `views` (K) output rows, consecutive and in view order `0..K-1`,
//! followed by the untouched row with view index `K` when `keep_original` is set. Each
//! augmented column runs its ordered op list ([`AugmentOp`]): text ops ([`text`]), image ops
//! ([`image`]) or vector ops ([`vector`]). Columns not named in `ops` pass through, repeated
//! for every view; a `view` column (UInt32) is inserted right after the id column.
//!
//! # Determinism
//! Every op of every view draws from its own generator seeded by
//! `(pipeline seed, column, record id, view, op index)` ([`rng`]). Batches are independent, the
//! worker pool keeps input order (unless `ordered: false`), so the output is byte-identical for
//! any worker count and across runs of the same build.
//!
//! # Bad rows
//! A null id, a null or empty (no words) text, an undecodable image, a null vector or one of the
//! wrong length follows `on_error`: `fail` stops the pipeline naming the source row and the
//! reason; `skip` drops the row (all its views), counts it in `rows_skipped` and writes it with
//! the reason to the quarantine. A missing column or a wrong type is a validation error before
//! anything runs.

pub mod config;
pub mod image;
pub mod rng;
pub mod text;
pub mod vector;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, GenericBinaryBuilder,
    GenericStringBuilder, ListArray, OffsetSizeTrait, UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use config::{AugmentOp, AugmentStageConfig, OpFamily};

use self::image::{ImageOutput, ImagePipeline, ImageScratch, Img};
use self::text::{Synonyms, TextPipeline, TextScratch};
use self::vector::VectorPipeline;
use crate::batch::Batch;
use crate::config::OnError;
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::runtime::pool::map_batches;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// The schema this stage emits for `input`: the input columns in order, a UInt32 `view` column
/// right after the id column, image columns ending in `to_tensor` turned into
/// `FixedSizeList<Float32, 3·h·w>`; every other column keeps its type.
///
/// # Errors
/// Every problem found, with its key path inside the component: missing or mistyped columns,
/// mixed op families on one column, misplaced `encode`/`to_tensor`, parameters out of range,
/// unreadable synonyms files.
pub fn output_schema(
    cfg: &AugmentStageConfig,
    input: &SchemaRef,
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    let mut problems = Vec::new();
    check(cfg, input, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    // Synonyms files: parsed once here so a bad file stops the pipeline before it runs.
    for (col, ops) in &cfg.ops {
        for (i, op) in ops.iter().enumerate() {
            if let AugmentOp::SynonymReplacement { path, .. } = op
                && let Err(e) = Synonyms::load(path)
            {
                problems.push((key(&["ops", col, &i.to_string(), "path"]), e));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(output_schema_unchecked(cfg, input))
}

fn key(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn family_accepts(family: OpFamily, t: &DataType) -> bool {
    match family {
        OpFamily::Text => matches!(t, DataType::Utf8 | DataType::LargeUtf8),
        OpFamily::Image => matches!(t, DataType::Binary | DataType::LargeBinary),
        OpFamily::Vector => match t {
            DataType::FixedSizeList(f, _) | DataType::List(f) => {
                f.data_type() == &DataType::Float32
            }
            _ => false,
        },
    }
}

fn family_type_name(family: OpFamily) -> &'static str {
    match family {
        OpFamily::Text => "a string column (Utf8 or LargeUtf8)",
        OpFamily::Image => "a binary column of encoded images (Binary or LargeBinary)",
        OpFamily::Vector => "a vector column (FixedSizeList<Float32> or List<Float32>)",
    }
}

fn check(cfg: &AugmentStageConfig, input: &SchemaRef, problems: &mut Vec<PlanProblem>) {
    if cfg.workers == Some(0) {
        problems.push((key(&["workers"]), "`workers` must be at least 1".into()));
    }
    if cfg.views == 0 {
        problems.push((key(&["views"]), "`views` must be at least 1".into()));
    }
    super::require_column(
        input,
        &cfg.id_column,
        key(&["id_column"]),
        "an integer column (Int8–Int64 or UInt8–UInt64) of record ids",
        is_integer,
        problems,
    );
    if input.field_with_name(&cfg.view_column).is_ok() {
        problems.push((
            key(&["view_column"]),
            format!(
                "the input already has a column `{}`; choose another `view_column`",
                cfg.view_column
            ),
        ));
    }
    if cfg.ops.is_empty() {
        problems.push((
            key(&["ops"]),
            "nothing to augment: name at least one column with its ops".into(),
        ));
    }
    for (col, ops) in &cfg.ops {
        let col_key = |rest: &[&str]| {
            let mut k = key(&["ops", col]);
            k.extend(rest.iter().map(|s| s.to_string()));
            k
        };
        if col == &cfg.id_column {
            problems.push((
                col_key(&[]),
                "the id column cannot be augmented (its value seeds the augmentation)".into(),
            ));
        }
        let Some(first) = ops.first() else {
            problems.push((col_key(&[]), "needs at least one op".into()));
            continue;
        };
        let family = first.family();
        let mut mixed = false;
        for (i, op) in ops.iter().enumerate() {
            let idx = i.to_string();
            if op.family() != family {
                mixed = true;
                problems.push((
                    col_key(&[&idx, "op"]),
                    format!(
                        "`{}` is {}, but this column's first op `{}` is {}; one column takes one family of ops",
                        op.name(),
                        op.family().describe(),
                        first.name(),
                        family.describe()
                    ),
                ));
            }
            if op.is_terminal() && i + 1 != ops.len() {
                problems.push((
                    col_key(&[&idx, "op"]),
                    format!(
                        "`{}` decides the output form and must be the last op",
                        op.name()
                    ),
                ));
            }
            for (param, msg) in op.check() {
                let text = format!("`{param}` of `{}`: {msg}", op.name());
                problems.push((col_key(&[&idx, &param]), text));
            }
        }
        if !mixed {
            super::require_column(
                input,
                col,
                col_key(&[]),
                family_type_name(family),
                |t| family_accepts(family, t),
                problems,
            );
        }
        if let Some(dim) = cfg.dims.get(col) {
            match input.field_with_name(col).map(|f| f.data_type().clone()) {
                Ok(DataType::FixedSizeList(_, n)) if n as usize != *dim => problems.push((
                    key(&["dims", col]),
                    format!("column `{col}` is FixedSizeList of {n}, but dims says {dim}"),
                )),
                _ => {}
            }
        }
    }
    for (col, dim) in &cfg.dims {
        let is_vector_col = cfg
            .ops
            .get(col)
            .and_then(|o| o.first())
            .is_some_and(|o| o.family() == OpFamily::Vector);
        if !is_vector_col {
            problems.push((
                key(&["dims", col]),
                format!("`{col}` is not a vector column with ops in `ops`"),
            ));
        }
        if *dim == 0 {
            problems.push((key(&["dims", col]), "a dimension must be at least 1".into()));
        }
    }
}

/// The output schema of a configuration already checked against `input`.
fn output_schema_unchecked(cfg: &AugmentStageConfig, input: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<FieldRef> = Vec::with_capacity(input.fields().len() + 1);
    for f in input.fields() {
        let tensor = cfg.ops.get(f.name()).and_then(|ops| match ops.last() {
            Some(AugmentOp::ToTensor { size, .. }) => Some(3 * size[0] as i32 * size[1] as i32),
            _ => None,
        });
        match tensor {
            Some(len) => fields.push(Arc::new(Field::new(
                f.name(),
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, false)),
                    len,
                ),
                f.is_nullable(),
            ))),
            None => fields.push(f.clone()),
        }
        if f.name() == &cfg.id_column {
            fields.push(Arc::new(Field::new(
                &cfg.view_column,
                DataType::UInt32,
                false,
            )));
        }
    }
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

/// One augmented column, compiled.
#[derive(Debug)]
struct ColumnPlan {
    name: String,
    hash: u64,
    kind: ColumnKind,
}

#[derive(Debug)]
enum ColumnKind {
    Text(TextPipeline),
    Image(ImagePipeline),
    Vector(VectorPipeline, Option<usize>),
}

/// The built stage: compiled ops plus what a worker needs to process a batch.
#[derive(Debug)]
struct Augmenter {
    name: Arc<str>,
    cfg: AugmentStageConfig,
    seed: u64,
    columns: Vec<ColumnPlan>,
    quarantine: Arc<crate::runtime::quarantine::Quarantine>,
    metrics: Arc<ComponentMetrics>,
}

/// Builds the stage's lazy output stream on the shared worker pool.
///
/// # Errors
/// When a synonyms file cannot be loaded or the pool cannot take the stage's window.
pub fn build(
    name: &str,
    cfg: &AugmentStageConfig,
    input: BatchStream,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    let aug = Arc::new(Augmenter::new(name, cfg, ctx, metrics.clone())?);
    let workers = cfg.workers.unwrap_or(ctx.pool.threads()).max(1);
    // Batches in flight. Results come back in input order, so with only one batch per worker
    // a worker that finishes early idles until the batch before its own is done (batches of
    // images vary in cost); two per worker keep every pool thread busy. A stage capped by its
    // own `workers` keeps exactly that many in flight, so it never takes more threads.
    let window = match cfg.workers {
        Some(_) => workers,
        None => 2 * workers,
    };
    ctx.pool.reserve(window)?;
    metrics.set_detail("views", cfg.views);
    metrics.set_detail("keep_original", cfg.keep_original);
    metrics.set_detail("workers", workers);
    let f = move |b: Batch| -> Result<Batch> { aug.process(b) };
    Ok(map_batches(
        ctx.pool.clone(),
        input,
        window,
        cfg.ordered,
        metrics,
        Arc::new(f),
    ))
}

impl Augmenter {
    fn new(
        name: &str,
        cfg: &AugmentStageConfig,
        ctx: &Ctx,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<Augmenter> {
        let mut columns = Vec::new();
        for (col, ops) in &cfg.ops {
            let family = ops
                .first()
                .map(|o| o.family())
                .ok_or_else(|| Error::Other(format!("ops.{col}: needs at least one op")))?;
            let kind = match family {
                OpFamily::Text => {
                    let mut syn = HashMap::new();
                    for (i, op) in ops.iter().enumerate() {
                        if let AugmentOp::SynonymReplacement { path, .. } = op {
                            let s = Synonyms::load(path)
                                .map_err(|e| Error::Other(format!("ops.{col}.{i}.path: {e}")))?;
                            syn.insert(i, Arc::new(s));
                        }
                    }
                    ColumnKind::Text(TextPipeline::new(ops, &syn))
                }
                OpFamily::Image => ColumnKind::Image(ImagePipeline::new(ops)),
                OpFamily::Vector => {
                    ColumnKind::Vector(VectorPipeline::new(ops), cfg.dims.get(col).copied())
                }
            };
            columns.push(ColumnPlan {
                name: col.clone(),
                hash: rng::hash_str(col),
                kind,
            });
        }
        Ok(Augmenter {
            name: Arc::from(name),
            cfg: cfg.clone(),
            seed: ctx.seed,
            columns,
            quarantine: ctx.quarantine.clone(),
            metrics,
        })
    }

    /// Augments one batch.
    fn process(&self, b: Batch) -> Result<Batch> {
        let data = &b.data;
        let n = data.num_rows();
        let schema = data.schema();
        let out_schema = output_schema_unchecked(&self.cfg, &schema);
        let ids = read_ids(
            data.column_by_name(&self.cfg.id_column)
                .ok_or_else(|| missing(&self.cfg.id_column))?,
        );
        let k = self.cfg.views;
        let per_row = k as usize + self.cfg.keep_original as usize;

        let mut inputs: Vec<ColIn<'_>> = Vec::with_capacity(self.columns.len());
        let mut outs: Vec<ColOut> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let arr = data
                .column_by_name(&c.name)
                .ok_or_else(|| missing(&c.name))?;
            let (i, o) = ColIn::new(arr, &c.kind, n * per_row)?;
            inputs.push(i);
            outs.push(o);
        }

        let mut scratch = Scratch::default();
        let mut decoded: Vec<Option<Img>> = vec![None; self.columns.len()];
        let mut good: Vec<u32> = Vec::with_capacity(n);
        let mut skipped = 0u64;
        for (row, &maybe_id) in ids.iter().enumerate() {
            let reason = match maybe_id {
                None => Some(format!("id column `{}` is null", self.cfg.id_column)),
                Some(_) => self.prepare(row, &inputs, &mut decoded),
            };
            let id = match (maybe_id, reason) {
                (Some(id), None) => id,
                (_, reason) => {
                    let reason = reason.expect("a null id has a reason");
                    let at = b.meta.first_row + row as u64;
                    match self.cfg.on_error {
                        OnError::Fail => {
                            return Err(Error::BadRow {
                                origin: b.meta.origin.to_string(),
                                row: at,
                                reason,
                            });
                        }
                        OnError::Skip => {
                            self.quarantine.write(
                                &self.name,
                                &b.meta.origin,
                                at,
                                data,
                                row,
                                &reason,
                            )?;
                            skipped += 1;
                            continue;
                        }
                    }
                }
            };
            good.push(row as u32);
            for view in 0..k {
                for (ci, c) in self.columns.iter().enumerate() {
                    let key = rng::record_key(self.seed, c.hash, id, view);
                    self.augment_one(
                        c,
                        &inputs[ci],
                        &mut outs[ci],
                        row,
                        decoded[ci].as_ref(),
                        key,
                        &mut scratch,
                    )
                    .map_err(|e| Error::Other(format!("column `{}`: {e}", c.name)))?;
                }
            }
            if self.cfg.keep_original {
                for (ci, c) in self.columns.iter().enumerate() {
                    original_one(
                        c,
                        &inputs[ci],
                        &mut outs[ci],
                        row,
                        decoded[ci].as_ref(),
                        &mut scratch,
                    );
                }
            }
        }
        if skipped > 0 {
            self.metrics
                .rows_skipped
                .fetch_add(skipped, Ordering::Relaxed);
        }

        // Assemble the columns in output-schema order.
        let identity = good.len() == n && per_row == 1;
        let take_idx: Option<UInt32Array> = (!identity).then(|| {
            UInt32Array::from_iter_values(
                good.iter().flat_map(|&r| std::iter::repeat_n(r, per_row)),
            )
        });
        let views = UInt32Array::from_iter_values(good.iter().flat_map(|_| 0..per_row as u32));
        let mut built: HashMap<&str, ArrayRef> = HashMap::new();
        for ((c, o), f) in self.columns.iter().zip(outs).zip(
            self.columns
                .iter()
                .map(|c| out_schema.field_with_name(&c.name)),
        ) {
            let f = f.map_err(|e| Error::arrow("augment output", e))?;
            built.insert(c.name.as_str(), o.finish(f)?);
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
        for (f, arr) in schema.fields().iter().zip(data.columns()) {
            if let Some(a) = built.remove(f.name().as_str()) {
                cols.push(a);
            } else if let Some(idx) = &take_idx {
                cols.push(
                    arrow::compute::take(arr.as_ref(), idx, None)
                        .map_err(|e| Error::arrow(format!("repeating column `{}`", f.name()), e))?,
                );
            } else {
                cols.push(arr.clone());
            }
            if f.name() == &self.cfg.id_column {
                cols.push(Arc::new(views.clone()));
            }
        }
        let out = RecordBatch::try_new(out_schema, cols)
            .map_err(|e| Error::arrow("assembling augmented batch", e))?;
        Ok(b.with_data(out))
    }

    /// Checks (and for images decodes) every augmented value of `row`; returns the reason when
    /// the row is bad.
    fn prepare(
        &self,
        row: usize,
        inputs: &[ColIn<'_>],
        decoded: &mut [Option<Img>],
    ) -> Option<String> {
        for (ci, c) in self.columns.iter().enumerate() {
            let input = &inputs[ci];
            if input.is_null(row) {
                return Some(format!("column `{}` is null", c.name));
            }
            match input {
                ColIn::Str32(a) => {
                    if TextPipeline::is_empty_text(a.value(row)) {
                        return Some(format!("column `{}` is empty (no words)", c.name));
                    }
                }
                ColIn::Str64(a) => {
                    if TextPipeline::is_empty_text(a.value(row)) {
                        return Some(format!("column `{}` is empty (no words)", c.name));
                    }
                }
                ColIn::Bin32(_) | ColIn::Bin64(_) => match Img::decode(input.bytes(row)) {
                    Ok(img) => decoded[ci] = Some(img),
                    Err(e) => return Some(format!("column `{}`: {e}", c.name)),
                },
                ColIn::Fixed { .. } | ColIn::List { .. } => {
                    let len = input.vector(row).len();
                    let want = match (&c.kind, input) {
                        (_, ColIn::Fixed { dim, .. }) => Some(*dim),
                        (ColumnKind::Vector(_, dim), _) => *dim,
                        _ => None,
                    };
                    match want {
                        Some(d) if d != len => {
                            return Some(format!(
                                "column `{}` has a vector of {len} values, expected {d}",
                                c.name
                            ));
                        }
                        None if len == 0 => {
                            return Some(format!("column `{}` has an empty vector", c.name));
                        }
                        _ => {}
                    }
                }
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn augment_one(
        &self,
        c: &ColumnPlan,
        input: &ColIn<'_>,
        out: &mut ColOut,
        row: usize,
        decoded: Option<&Img>,
        key: u64,
        s: &mut Scratch,
    ) -> std::result::Result<(), String> {
        match (&c.kind, out) {
            (ColumnKind::Text(p), out) => {
                let text = match input {
                    ColIn::Str32(a) => a.value(row),
                    ColIn::Str64(a) => a.value(row),
                    _ => unreachable!("validated type"),
                };
                p.apply(text, key, &mut s.text);
                out.push_str(&s.text.out);
            }
            (ColumnKind::Image(p), ColOut::Tensor(values, _)) => {
                p.apply(
                    decoded.expect("decoded in prepare"),
                    key,
                    &mut s.image,
                    values,
                )?;
            }
            (ColumnKind::Image(p), out) => {
                let mut unused = Vec::new();
                p.apply(
                    decoded.expect("decoded in prepare"),
                    key,
                    &mut s.image,
                    &mut unused,
                )?;
                out.push_bytes(&s.image.encoded);
            }
            (ColumnKind::Vector(p, _), ColOut::Vector { values, lengths }) => {
                let v = input.vector(row);
                let start = values.len();
                values.extend_from_slice(v);
                p.apply(&mut values[start..], key);
                lengths.push(v.len());
            }
            _ => unreachable!("output matches the column kind"),
        }
        Ok(())
    }
}

/// Appends the untouched value of `row` (`keep_original`).
fn original_one(
    c: &ColumnPlan,
    input: &ColIn<'_>,
    out: &mut ColOut,
    row: usize,
    decoded: Option<&Img>,
    s: &mut Scratch,
) {
    match (&c.kind, out) {
        (ColumnKind::Text(_), out) => match input {
            ColIn::Str32(a) => out.push_str(a.value(row)),
            ColIn::Str64(a) => out.push_str(a.value(row)),
            _ => unreachable!("validated type"),
        },
        (ColumnKind::Image(p), ColOut::Tensor(values, _)) => {
            p.original_tensor(decoded.expect("decoded in prepare"), &mut s.image, values)
        }
        (ColumnKind::Image(_), out) => out.push_bytes(input.bytes(row)),
        (ColumnKind::Vector(..), ColOut::Vector { values, lengths }) => {
            let v = input.vector(row);
            values.extend_from_slice(v);
            lengths.push(v.len());
        }
        _ => unreachable!("output matches the column kind"),
    }
}

fn missing(col: &str) -> Error {
    Error::Other(format!("column `{col}` is missing from a batch"))
}

/// Ids as `u64` (signed ids keep their two's-complement bits), `None` for nulls.
fn read_ids(col: &ArrayRef) -> Vec<Option<u64>> {
    use arrow::datatypes::*;
    macro_rules! ids {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as i64 as u64))
                .collect()
        };
    }
    macro_rules! uids {
        ($t:ty) => {
            col.as_primitive::<$t>()
                .iter()
                .map(|v| v.map(|v| v as u64))
                .collect()
        };
    }
    match col.data_type() {
        DataType::Int8 => ids!(Int8Type),
        DataType::Int16 => ids!(Int16Type),
        DataType::Int32 => ids!(Int32Type),
        DataType::Int64 => ids!(Int64Type),
        DataType::UInt8 => uids!(UInt8Type),
        DataType::UInt16 => uids!(UInt16Type),
        DataType::UInt32 => uids!(UInt32Type),
        DataType::UInt64 => uids!(UInt64Type),
        _ => vec![None; col.len()],
    }
}

#[derive(Default)]
struct Scratch {
    text: TextScratch,
    image: ImageScratch,
}

/// Typed access to one augmented input column.
enum ColIn<'a> {
    Str32(&'a arrow::array::StringArray),
    Str64(&'a arrow::array::LargeStringArray),
    Bin32(&'a arrow::array::BinaryArray),
    Bin64(&'a arrow::array::LargeBinaryArray),
    Fixed {
        arr: &'a FixedSizeListArray,
        values: &'a [f32],
        dim: usize,
    },
    List {
        arr: &'a ListArray,
        values: &'a [f32],
    },
}

impl<'a> ColIn<'a> {
    fn new(arr: &'a ArrayRef, kind: &ColumnKind, capacity: usize) -> Result<(ColIn<'a>, ColOut)> {
        let bad = || Error::Other(format!("unexpected column type {}", arr.data_type()));
        Ok(match (arr.data_type(), kind) {
            (DataType::Utf8, ColumnKind::Text(_)) => {
                let a = arr.as_string::<i32>();
                let bytes = a.value_data().len();
                (
                    ColIn::Str32(a),
                    ColOut::Str32(GenericStringBuilder::with_capacity(
                        capacity,
                        bytes * capacity / a.len().max(1) + 64,
                    )),
                )
            }
            (DataType::LargeUtf8, ColumnKind::Text(_)) => {
                let a = arr.as_string::<i64>();
                let bytes = a.value_data().len();
                (
                    ColIn::Str64(a),
                    ColOut::Str64(GenericStringBuilder::with_capacity(
                        capacity,
                        bytes * capacity / a.len().max(1) + 64,
                    )),
                )
            }
            (DataType::Binary, ColumnKind::Image(p)) => (
                ColIn::Bin32(arr.as_binary::<i32>()),
                ColOut::for_image(p, false, capacity),
            ),
            (DataType::LargeBinary, ColumnKind::Image(p)) => (
                ColIn::Bin64(arr.as_binary::<i64>()),
                ColOut::for_image(p, true, capacity),
            ),
            (DataType::FixedSizeList(_, dim), ColumnKind::Vector(..)) => {
                let a = arr.as_fixed_size_list();
                let values = a
                    .values()
                    .as_primitive::<arrow::datatypes::Float32Type>()
                    .values();
                let dim = *dim as usize;
                (
                    ColIn::Fixed {
                        arr: a,
                        values,
                        dim,
                    },
                    ColOut::Vector {
                        values: Vec::with_capacity(capacity * dim),
                        lengths: Vec::with_capacity(capacity),
                    },
                )
            }
            (DataType::List(_), ColumnKind::Vector(..)) => {
                let a = arr.as_list::<i32>();
                let values = a
                    .values()
                    .as_primitive::<arrow::datatypes::Float32Type>()
                    .values();
                (
                    ColIn::List { arr: a, values },
                    ColOut::Vector {
                        values: Vec::new(),
                        lengths: Vec::with_capacity(capacity),
                    },
                )
            }
            _ => return Err(bad()),
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            ColIn::Str32(a) => a.is_null(row),
            ColIn::Str64(a) => a.is_null(row),
            ColIn::Bin32(a) => a.is_null(row),
            ColIn::Bin64(a) => a.is_null(row),
            ColIn::Fixed { arr, .. } => arr.is_null(row),
            ColIn::List { arr, .. } => arr.is_null(row),
        }
    }

    fn bytes(&self, row: usize) -> &'a [u8] {
        match self {
            ColIn::Bin32(a) => a.value(row),
            ColIn::Bin64(a) => a.value(row),
            _ => unreachable!("image column"),
        }
    }

    fn vector(&self, row: usize) -> &'a [f32] {
        match self {
            ColIn::Fixed { arr, values, dim } => {
                let start = arr.value_offset_at(row);
                &values[start..start + dim]
            }
            ColIn::List { arr, values } => {
                let o = arr.value_offsets();
                &values[o[row] as usize..o[row + 1] as usize]
            }
            _ => unreachable!("vector column"),
        }
    }
}

/// Output being built for one augmented column.
enum ColOut {
    Str32(GenericStringBuilder<i32>),
    Str64(GenericStringBuilder<i64>),
    Bin32(GenericBinaryBuilder<i32>),
    Bin64(GenericBinaryBuilder<i64>),
    Tensor(Vec<f32>, usize),
    Vector {
        values: Vec<f32>,
        lengths: Vec<usize>,
    },
}

impl ColOut {
    fn for_image(p: &ImagePipeline, large: bool, capacity: usize) -> ColOut {
        match p.output {
            ImageOutput::Tensor { .. } => {
                let len = p.output.tensor_len().expect("tensor");
                ColOut::Tensor(Vec::with_capacity(capacity * len), len)
            }
            ImageOutput::Encode { .. } if large => {
                ColOut::Bin64(GenericBinaryBuilder::with_capacity(capacity, 0))
            }
            ImageOutput::Encode { .. } => {
                ColOut::Bin32(GenericBinaryBuilder::with_capacity(capacity, 0))
            }
        }
    }

    fn push_str(&mut self, s: &str) {
        match self {
            ColOut::Str32(b) => b.append_value(s),
            ColOut::Str64(b) => b.append_value(s),
            _ => unreachable!("text output"),
        }
    }

    fn push_bytes(&mut self, s: &[u8]) {
        match self {
            ColOut::Bin32(b) => b.append_value(s),
            ColOut::Bin64(b) => b.append_value(s),
            _ => unreachable!("binary output"),
        }
    }

    fn finish(self, field: &Field) -> Result<ArrayRef> {
        fn fin<O: OffsetSizeTrait>(mut b: GenericStringBuilder<O>) -> ArrayRef {
            Arc::new(b.finish())
        }
        Ok(match self {
            ColOut::Str32(b) => fin(b),
            ColOut::Str64(b) => fin(b),
            ColOut::Bin32(mut b) => Arc::new(b.finish()),
            ColOut::Bin64(mut b) => Arc::new(b.finish()),
            ColOut::Tensor(values, len) => {
                let DataType::FixedSizeList(item, _) = field.data_type() else {
                    return Err(Error::Other(format!(
                        "column `{}` is not a tensor",
                        field.name()
                    )));
                };
                Arc::new(
                    FixedSizeListArray::try_new(
                        item.clone(),
                        len as i32,
                        Arc::new(Float32Array::from(values)),
                        None,
                    )
                    .map_err(|e| Error::arrow(format!("tensor column `{}`", field.name()), e))?,
                )
            }
            ColOut::Vector { values, lengths } => match field.data_type() {
                DataType::FixedSizeList(item, dim) => Arc::new(
                    FixedSizeListArray::try_new(
                        item.clone(),
                        *dim,
                        Arc::new(Float32Array::from(values)),
                        None,
                    )
                    .map_err(|e| Error::arrow(format!("vector column `{}`", field.name()), e))?,
                ),
                DataType::List(item) => Arc::new(
                    ListArray::try_new(
                        item.clone(),
                        OffsetBuffer::from_lengths(lengths),
                        Arc::new(Float32Array::from(values)),
                        None,
                    )
                    .map_err(|e| Error::arrow(format!("vector column `{}`", field.name()), e))?,
                ),
                other => {
                    return Err(Error::Other(format!(
                        "column `{}` has unexpected type {other}",
                        field.name()
                    )));
                }
            },
        })
    }
}
