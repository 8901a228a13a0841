//! `type: parquet` — streams Parquet files a row group at a time.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};

use super::{PlanProblem, SourcePlan, project, relabel, resolve_files, same_projection};
use crate::batch::Batch;
use crate::config::ParquetSourceConfig;
use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::stream::BatchStream;

fn load_metadata(
    path: &std::path::Path,
) -> std::result::Result<(File, ArrowReaderMetadata), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| format!("not a readable Parquet file (truncated or corrupt footer?): {e}"))?;
    Ok((file, meta))
}

/// Resolves files and reads every footer; checks columns and renames.
///
/// # Errors
/// Every problem found.
pub fn plan(cfg: &ParquetSourceConfig) -> std::result::Result<SourcePlan, Vec<PlanProblem>> {
    let files = resolve_files(&cfg.path)?;
    let mut problems = Vec::new();
    check_common(cfg.batch_rows, cfg.shard.as_ref(), &mut problems);
    let mut schema: Option<SchemaRef> = None;
    let mut rows = 0u64;
    let mut unit = 0u64;
    for f in &files {
        let (_, meta) = match load_metadata(f) {
            Ok(m) => m,
            Err(e) => {
                problems.push((vec!["path".into()], format!("{}: {e}", f.display())));
                continue;
            }
        };
        match project(meta.schema(), cfg.columns.as_deref(), &cfg.rename) {
            Ok((_, s)) => match &schema {
                None => schema = Some(s),
                Some(first) => {
                    if let Some(d) = same_projection(first, &s) {
                        problems.push((
                            vec!["path".into()],
                            format!("{}: {d} ({})", f.display(), files[0].display()),
                        ));
                    }
                }
            },
            Err(ps) => {
                for (k, m) in ps {
                    problems.push((k, format!("{}: {m}", f.display())));
                }
            }
        }
        for rg in meta.metadata().row_groups() {
            if cfg
                .shard
                .is_none_or(|s| unit % s.count as u64 == s.index as u64)
            {
                rows += rg.num_rows() as u64;
            }
            unit += 1;
        }
    }
    match (problems.is_empty(), schema) {
        (true, Some(schema)) => Ok(SourcePlan {
            files,
            schema,
            rows: Some(rows),
        }),
        _ => Err(problems),
    }
}

pub(crate) fn check_common(
    batch_rows: usize,
    shard: Option<&crate::config::ShardConfig>,
    problems: &mut Vec<PlanProblem>,
) {
    if batch_rows == 0 {
        problems.push((vec!["batch_rows".into()], "must be at least 1".into()));
    }
    if let Some(s) = shard
        && (s.count == 0 || s.index >= s.count)
    {
        problems.push((
            vec!["shard".into()],
            format!(
                "needs 0 <= index < count, got index {} and count {}",
                s.index, s.count
            ),
        ));
    }
}

/// Opens the source's lazy stream.
pub fn open(
    cfg: ParquetSourceConfig,
    plan: SourcePlan,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> BatchStream {
    metrics
        .rows_expected
        .store(plan.rows.unwrap_or(0), Ordering::Relaxed);
    let name = metrics.name.clone();
    super::arrow_ipc::threaded(ctx, name, move |tx| read_all(&cfg, &plan, &tx, &metrics))
}

fn read_all(
    cfg: &ParquetSourceConfig,
    plan: &SourcePlan,
    tx: &tokio::sync::mpsc::Sender<Result<Batch>>,
    metrics: &ComponentMetrics,
) -> Result<()> {
    let mut unit = 0u64;
    let mut seq = 0u64;
    for path in &plan.files {
        let origin: Arc<str> = Arc::from(path.display().to_string());
        let (file, meta) = load_metadata(path).map_err(|m| Error::Input {
            path: path.clone(),
            message: m,
        })?;
        let (indices, _) =
            project(meta.schema(), cfg.columns.as_deref(), &cfg.rename).map_err(|ps| {
                Error::Input {
                    path: path.clone(),
                    message: ps.into_iter().map(|p| p.1).collect::<Vec<_>>().join("; "),
                }
            })?;
        let mut sorted = indices.clone();
        sorted.sort_unstable();
        let positions: Vec<usize> = indices
            .iter()
            .map(|i| sorted.binary_search(i).expect("index present"))
            .collect();
        let mask = ProjectionMask::roots(meta.parquet_schema(), sorted.iter().copied());
        let mut start = 0u64;
        for (rg, rg_meta) in meta.metadata().row_groups().iter().enumerate() {
            let rg_rows = rg_meta.num_rows() as u64;
            let take = cfg
                .shard
                .is_none_or(|s| unit % s.count as u64 == s.index as u64);
            unit += 1;
            if !take {
                start += rg_rows;
                continue;
            }
            let ctx_msg = |e: &dyn std::fmt::Display, at: u64| Error::Input {
                path: path.clone(),
                message: format!(
                    "row group {rg} (rows {start}..{}), near row {at}: {e}",
                    start + rg_rows
                ),
            };
            let file = file
                .try_clone()
                .map_err(|e| Error::io("reading", path, e))?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                .with_projection(mask.clone())
                .with_batch_size(cfg.batch_rows)
                .with_row_groups(vec![rg])
                .build()
                .map_err(|e| ctx_msg(&e, start))?;
            let mut row = start;
            let mut t = Instant::now();
            for b in reader {
                let b = b.map_err(|e| ctx_msg(&e, row))?;
                let b = relabel(&b, &positions, &plan.schema).map_err(|e| ctx_msg(&e, row))?;
                let n = b.num_rows() as u64;
                metrics
                    .busy_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                if tx
                    .blocking_send(Ok(Batch::new(b, seq, origin.clone(), row)))
                    .is_err()
                {
                    return Ok(());
                }
                t = Instant::now();
                seq += 1;
                row += n;
            }
            start += rg_rows;
        }
    }
    Ok(())
}
