//! `type: clean` — row hygiene before expensive stages: rejects rows whose text columns are
//! null, empty or too long, or whose required columns are null, and can trim white space.
//!
//! Bad rows follow `on_error`: `fail` stops the pipeline naming the row, `skip` writes the row
//! and the reason to the quarantine and counts it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, LargeStringArray, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::require_column;
use crate::batch::Batch;
use crate::config::{CleanStageConfig, OnError};
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::runtime::pool::map_batches;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// Output schema: the input schema (text columns keep their type).
///
/// # Errors
/// Missing columns, non-text `text_columns`, inconsistent bounds.
pub fn output_schema(
    cfg: &CleanStageConfig,
    input: &SchemaRef,
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    let mut problems = Vec::new();
    for (i, c) in cfg.text_columns.iter().enumerate() {
        require_column(
            input,
            c,
            vec!["text_columns".into(), i.to_string()],
            "a string column (Utf8 or LargeUtf8)",
            |t| matches!(t, DataType::Utf8 | DataType::LargeUtf8),
            &mut problems,
        );
    }
    for (i, c) in cfg.not_null.iter().enumerate() {
        require_column(
            input,
            c,
            vec!["not_null".into(), i.to_string()],
            "any type",
            |_| true,
            &mut problems,
        );
    }
    if let Some(max) = cfg.max_chars
        && max < cfg.min_chars
    {
        problems.push((
            vec!["max_chars".into()],
            format!("max_chars ({max}) is below min_chars ({})", cfg.min_chars),
        ));
    }
    if cfg.text_columns.is_empty() && cfg.not_null.is_empty() {
        problems.push((
            vec![],
            "nothing to check: set `text_columns` and/or `not_null`".into(),
        ));
    }
    if cfg.workers == Some(0) {
        problems.push((vec!["workers".into()], "must be at least 1".into()));
    }
    if problems.is_empty() {
        Ok(input.clone())
    } else {
        Err(problems)
    }
}

/// Builds the stage on the worker pool.
///
/// # Errors
/// When the pool cannot take the stage's window.
pub fn build(
    name: &str,
    cfg: &CleanStageConfig,
    input: BatchStream,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    let window = 2 * cfg.workers.unwrap_or(ctx.pool.threads()).max(1);
    ctx.pool.reserve(window)?;
    let ordered = cfg.ordered;
    let cfg = Arc::new(cfg.clone());
    let name: Arc<str> = Arc::from(name);
    let quarantine = ctx.quarantine.clone();
    let m = metrics.clone();
    let f = move |b: Batch| -> Result<Batch> {
        let (keep, reasons) = check(&cfg, &b.data);
        if reasons.is_empty() {
            return Ok(if cfg.trim {
                b.with_data(trim(&cfg, &b.data)?)
            } else {
                b
            });
        }
        for (row, reason) in &reasons {
            let at = b.meta.first_row + *row as u64;
            match cfg.on_error {
                OnError::Fail => {
                    return Err(Error::BadRow {
                        origin: b.meta.origin.to_string(),
                        row: at,
                        reason: reason.clone(),
                    });
                }
                OnError::Skip => {
                    quarantine.write(&name, &b.meta.origin, at, &b.data, *row, reason)?
                }
            }
        }
        m.rows_skipped
            .fetch_add(reasons.len() as u64, Ordering::Relaxed);
        let kept = arrow::compute::filter_record_batch(&b.data, &BooleanArray::from(keep))
            .map_err(|e| Error::arrow("filtering rows", e))?;
        let kept = if cfg.trim { trim(&cfg, &kept)? } else { kept };
        Ok(b.with_data(kept))
    };
    Ok(map_batches(
        ctx.pool.clone(),
        input,
        window,
        ordered,
        metrics,
        Arc::new(f),
    ))
}

/// Per row: keep or not, and the reasons for the rows not kept (row index within the batch).
fn check(cfg: &CleanStageConfig, batch: &RecordBatch) -> (Vec<bool>, Vec<(usize, String)>) {
    let n = batch.num_rows();
    let mut keep = vec![true; n];
    let mut reasons: Vec<(usize, String)> = Vec::new();
    let mut reject = |row: usize, why: String, keep: &mut Vec<bool>| {
        if keep[row] {
            keep[row] = false;
            reasons.push((row, why));
        }
    };
    for c in &cfg.not_null {
        let col = batch.column_by_name(c).expect("validated column");
        if col.null_count() > 0 {
            for row in 0..n {
                if col.is_null(row) {
                    reject(row, format!("column `{c}` is null"), &mut keep);
                }
            }
        }
    }
    for c in &cfg.text_columns {
        let col = batch.column_by_name(c).expect("validated column");
        let value = |row: usize| -> Option<&str> {
            match col.data_type() {
                DataType::LargeUtf8 => {
                    (!col.is_null(row)).then(|| col.as_string::<i64>().value(row))
                }
                _ => (!col.is_null(row)).then(|| col.as_string::<i32>().value(row)),
            }
        };
        for row in 0..n {
            let Some(v) = value(row) else {
                reject(row, format!("column `{c}` is null"), &mut keep);
                continue;
            };
            let v = if cfg.trim { v.trim() } else { v };
            let chars = v.chars().count();
            if chars < cfg.min_chars {
                let what = if chars == 0 {
                    "empty".to_string()
                } else {
                    format!("{chars} characters long")
                };
                reject(
                    row,
                    format!(
                        "column `{c}` is {what}, expected at least {}",
                        cfg.min_chars
                    ),
                    &mut keep,
                );
            } else if let Some(max) = cfg.max_chars
                && chars > max
            {
                reject(
                    row,
                    format!("column `{c}` is {chars} characters long, expected at most {max}"),
                    &mut keep,
                );
            }
        }
    }
    reasons.sort_by_key(|r| r.0);
    (keep, reasons)
}

fn trim(cfg: &CleanStageConfig, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    for c in &cfg.text_columns {
        let i = schema.index_of(c).map_err(|e| Error::arrow("trim", e))?;
        let col = &cols[i];
        cols[i] = match col.data_type() {
            DataType::LargeUtf8 => Arc::new(
                col.as_string::<i64>()
                    .iter()
                    .map(|v| v.map(str::trim))
                    .collect::<LargeStringArray>(),
            ),
            _ => Arc::new(
                col.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::trim))
                    .collect::<StringArray>(),
            ),
        };
    }
    RecordBatch::try_new(schema, cols).map_err(|e| Error::arrow("trim", e))
}
