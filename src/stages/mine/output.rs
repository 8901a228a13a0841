//! Output rows (sentence-transformers column names) and their Arrow schemas.
//!
//! | format | id columns | payload columns | label / scores |
//! |---|---|---|---|
//! | `triplet` | `anchor_id, positive_id, negative_id` | `anchor, positive, negative` | `scores: [pos, neg]` |
//! | `n-tuple` | `anchor_id, positive_id, negative_1_id…` | `anchor, positive, negative_1…` | `scores: [pos, neg_1…]` |
//! | `labeled-pair` | `anchor_id, candidate_id` | `anchor, positive` (the candidate) | `label` 1/0, `score` |
//! | `labeled-list` | `anchor_id, candidate_ids` | `anchor, positive` (list, positive first) | `labels`, `scores` |
//!
//! Payload columns exist only when the stage has a payload (`payload` in labelled mode; the
//! anchor and positive columns in paired mode); `scores` / `score` only with `output.scores`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Builder, Int64Array, Int64Builder, ListArray, ListBuilder,
    new_empty_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::config::OutputFormat;
use crate::error::{Error, Result};

/// Schema metadata key marking one RecordBatch = one sampler-formed training batch.
pub const TRAINING_BATCH_KEY: &str = "tripline.training_batch";

/// A record in an output row: its id and where its payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The record's id.
    pub id: i64,
    /// Payload array slot.
    pub slot: u32,
    /// Row in that array.
    pub row: u32,
}

/// One (anchor, positive) with its negatives, best first.
#[derive(Debug, Clone)]
pub struct MinedRow {
    /// The anchor.
    pub anchor: Member,
    /// The positive.
    pub positive: Member,
    /// `s(anchor, positive)`.
    pub positive_score: f32,
    /// Negatives and their scores.
    pub negatives: Vec<(Member, f32)>,
}

/// What the output looks like.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Row format.
    pub format: OutputFormat,
    /// Add scores.
    pub scores: bool,
    /// `n` of `n-tuple`.
    pub num_negatives: usize,
    /// Anchor payload type, if any.
    pub anchor_type: Option<DataType>,
    /// Positive / candidate payload type, if any.
    pub candidate_type: Option<DataType>,
    /// Mark batches as training batches.
    pub training_batch: bool,
}

fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

impl OutputSpec {
    /// The output schema.
    pub fn schema(&self) -> SchemaRef {
        let mut f = vec![Field::new("anchor_id", DataType::Int64, false)];
        let ct = self.candidate_type.clone();
        match self.format {
            OutputFormat::Triplet => {
                f.push(Field::new("positive_id", DataType::Int64, false));
                f.push(Field::new("negative_id", DataType::Int64, false));
            }
            OutputFormat::NTuple => {
                f.push(Field::new("positive_id", DataType::Int64, false));
                for i in 1..=self.num_negatives {
                    f.push(Field::new(
                        format!("negative_{i}_id"),
                        DataType::Int64,
                        false,
                    ));
                }
            }
            OutputFormat::LabeledPair => f.push(Field::new("candidate_id", DataType::Int64, false)),
            OutputFormat::LabeledList => {
                f.push(Field::new("candidate_ids", list_of(DataType::Int64), false))
            }
        }
        if let Some(at) = &self.anchor_type {
            f.push(Field::new("anchor", at.clone(), true));
        }
        if let Some(ct) = ct {
            match self.format {
                OutputFormat::Triplet => {
                    f.push(Field::new("positive", ct.clone(), true));
                    f.push(Field::new("negative", ct, true));
                }
                OutputFormat::NTuple => {
                    f.push(Field::new("positive", ct.clone(), true));
                    for i in 1..=self.num_negatives {
                        f.push(Field::new(format!("negative_{i}"), ct.clone(), true));
                    }
                }
                OutputFormat::LabeledPair => f.push(Field::new("positive", ct, true)),
                OutputFormat::LabeledList => f.push(Field::new("positive", list_of(ct), false)),
            }
        }
        match self.format {
            OutputFormat::LabeledPair => {
                f.push(Field::new("label", DataType::Int64, false));
                if self.scores {
                    f.push(Field::new("score", DataType::Float32, false));
                }
            }
            OutputFormat::LabeledList => {
                f.push(Field::new("labels", list_of(DataType::Int64), false));
                if self.scores {
                    f.push(Field::new("scores", list_of(DataType::Float32), false));
                }
            }
            _ => {
                if self.scores {
                    f.push(Field::new("scores", list_of(DataType::Float32), false));
                }
            }
        }
        let mut meta = HashMap::new();
        if self.training_batch {
            meta.insert(TRAINING_BATCH_KEY.to_string(), "true".to_string());
        }
        Arc::new(Schema::new_with_metadata(f, meta))
    }

    /// Builds one batch from `rows`. Returns the batch and the number of rows dropped
    /// (`n-tuple` rows lacking `n` negatives).
    ///
    /// # Errors
    /// When Arrow cannot assemble the columns (a bug).
    pub fn build(
        &self,
        rows: &[MinedRow],
        anchor_arrays: &[Option<ArrayRef>],
        candidate_arrays: &[Option<ArrayRef>],
    ) -> Result<(RecordBatch, usize)> {
        let schema = self.schema();
        let n = self.num_negatives;
        let mut dropped = 0;
        let kept: Vec<&MinedRow> = match self.format {
            OutputFormat::NTuple => rows
                .iter()
                .filter(|r| {
                    let ok = r.negatives.len() >= n;
                    dropped += usize::from(!ok);
                    ok
                })
                .collect(),
            OutputFormat::LabeledList => rows.iter().filter(|r| !r.negatives.is_empty()).collect(),
            _ => rows.iter().collect(),
        };
        // (anchor member, [(candidate member, score, is_positive)]) per output row, flattened
        // into columns below.
        let mut cols: Vec<ArrayRef> = Vec::new();
        let err = |e| Error::arrow("building mined rows", e);
        match self.format {
            OutputFormat::Triplet => {
                let trip: Vec<(&MinedRow, &(Member, f32))> = kept
                    .iter()
                    .flat_map(|r| r.negatives.iter().map(move |neg| (*r, neg)))
                    .collect();
                let a: Vec<Member> = trip.iter().map(|t| t.0.anchor).collect();
                let p: Vec<Member> = trip.iter().map(|t| t.0.positive).collect();
                let ng: Vec<Member> = trip.iter().map(|t| t.1.0).collect();
                cols.push(ids(&a));
                cols.push(ids(&p));
                cols.push(ids(&ng));
                if self.anchor_type.is_some() {
                    cols.push(gather(anchor_arrays, &a, self.anchor_type.as_ref())?);
                }
                if self.candidate_type.is_some() {
                    cols.push(gather(candidate_arrays, &p, self.candidate_type.as_ref())?);
                    cols.push(gather(candidate_arrays, &ng, self.candidate_type.as_ref())?);
                }
                if self.scores {
                    cols.push(score_lists(
                        trip.iter().map(|t| vec![t.0.positive_score, t.1.1]),
                    ));
                }
            }
            OutputFormat::NTuple => {
                let a: Vec<Member> = kept.iter().map(|r| r.anchor).collect();
                let p: Vec<Member> = kept.iter().map(|r| r.positive).collect();
                cols.push(ids(&a));
                cols.push(ids(&p));
                let negs: Vec<Vec<Member>> = (0..n)
                    .map(|i| kept.iter().map(|r| r.negatives[i].0).collect())
                    .collect();
                for ng in &negs {
                    cols.push(ids(ng));
                }
                if self.anchor_type.is_some() {
                    cols.push(gather(anchor_arrays, &a, self.anchor_type.as_ref())?);
                }
                if self.candidate_type.is_some() {
                    cols.push(gather(candidate_arrays, &p, self.candidate_type.as_ref())?);
                    for ng in &negs {
                        cols.push(gather(candidate_arrays, ng, self.candidate_type.as_ref())?);
                    }
                }
                if self.scores {
                    cols.push(score_lists(kept.iter().map(|r| {
                        std::iter::once(r.positive_score)
                            .chain(r.negatives[..n].iter().map(|x| x.1))
                            .collect()
                    })));
                }
            }
            OutputFormat::LabeledPair => {
                let mut a = Vec::new();
                let mut c = Vec::new();
                let mut label = Vec::new();
                let mut score = Float32Builder::new();
                for r in &kept {
                    a.push(r.anchor);
                    c.push(r.positive);
                    label.push(1i64);
                    score.append_value(r.positive_score);
                    for &(m, s) in &r.negatives {
                        a.push(r.anchor);
                        c.push(m);
                        label.push(0);
                        score.append_value(s);
                    }
                }
                cols.push(ids(&a));
                cols.push(ids(&c));
                if self.anchor_type.is_some() {
                    cols.push(gather(anchor_arrays, &a, self.anchor_type.as_ref())?);
                }
                if self.candidate_type.is_some() {
                    cols.push(gather(candidate_arrays, &c, self.candidate_type.as_ref())?);
                }
                cols.push(Arc::new(Int64Array::from(label)));
                if self.scores {
                    cols.push(Arc::new(score.finish()));
                }
            }
            OutputFormat::LabeledList => {
                let a: Vec<Member> = kept.iter().map(|r| r.anchor).collect();
                let mut flat = Vec::new();
                let mut lens = Vec::new();
                for r in &kept {
                    flat.push(r.positive);
                    flat.extend(r.negatives.iter().map(|x| x.0));
                    lens.push(1 + r.negatives.len());
                }
                let offsets = OffsetBuffer::from_lengths(lens.iter().copied());
                cols.push(ids(&a));
                cols.push(Arc::new(
                    ListArray::try_new(
                        Arc::new(Field::new("item", DataType::Int64, true)),
                        offsets.clone(),
                        ids(&flat),
                        None,
                    )
                    .map_err(err)?,
                ));
                if self.anchor_type.is_some() {
                    cols.push(gather(anchor_arrays, &a, self.anchor_type.as_ref())?);
                }
                if let Some(ct) = &self.candidate_type {
                    let values = gather(candidate_arrays, &flat, Some(ct))?;
                    cols.push(Arc::new(
                        ListArray::try_new(
                            Arc::new(Field::new("item", ct.clone(), true)),
                            offsets.clone(),
                            values,
                            None,
                        )
                        .map_err(err)?,
                    ));
                }
                let mut labels = ListBuilder::new(Int64Builder::new());
                for r in &kept {
                    labels.values().append_value(1);
                    for _ in &r.negatives {
                        labels.values().append_value(0);
                    }
                    labels.append(true);
                }
                cols.push(Arc::new(labels.finish()));
                if self.scores {
                    cols.push(score_lists(kept.iter().map(|r| {
                        std::iter::once(r.positive_score)
                            .chain(r.negatives.iter().map(|x| x.1))
                            .collect()
                    })));
                }
            }
        }
        // Builders name list items "item" and mark them nullable, as the schema does.
        let batch = RecordBatch::try_new(schema, cols).map_err(err)?;
        Ok((batch, dropped))
    }
}

fn ids(m: &[Member]) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(m.iter().map(|m| m.id)))
}

fn score_lists(rows: impl Iterator<Item = Vec<f32>>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new());
    for r in rows {
        for s in r {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Gathers payload values of `members` from the slot arrays.
fn gather(
    arrays: &[Option<ArrayRef>],
    members: &[Member],
    t: Option<&DataType>,
) -> Result<ArrayRef> {
    let t = t.expect("payload type");
    if members.is_empty() {
        return Ok(new_empty_array(t));
    }
    let mut slot_index: HashMap<u32, usize> = HashMap::new();
    let mut used: Vec<&dyn Array> = Vec::new();
    let mut idx = Vec::with_capacity(members.len());
    for m in members {
        let i = *slot_index.entry(m.slot).or_insert_with(|| {
            used.push(
                arrays[m.slot as usize]
                    .as_deref()
                    .expect("payload of a live record"),
            );
            used.len() - 1
        });
        idx.push((i, m.row as usize));
    }
    arrow::compute::interleave(&used, &idx).map_err(|e| Error::arrow("gathering payload", e))
}
