//! Sources: where records enter a pipeline.
//!
//! Both sources resolve their paths and read every file's schema during validation (footers and
//! headers only), so a missing file, a truncated file or a missing column is reported before
//! anything runs. At run time they read on a dedicated thread, a unit (Parquet row group, IPC
//! record batch) at a time, into a channel of capacity one: memory stays bounded by the batch
//! size whatever the input size.

pub mod arrow_ipc;
pub mod parquet;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::config::{Paths, SourceConfig};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::stream::BatchStream;

/// A problem found while planning a component: the key path inside the component where it
/// belongs (for locating it in the YAML) and the message.
pub type PlanProblem = (Vec<String>, String);

/// What validation learned about a source.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// The files to read, in order.
    pub files: Vec<PathBuf>,
    /// The schema of the batches the source emits (after projection and renames).
    pub schema: SchemaRef,
    /// Rows the source will emit (after sharding), when the format records it.
    pub rows: Option<u64>,
}

/// Resolves a source's paths and globs to files, in order.
///
/// # Errors
/// One problem per pattern that matches nothing or names a missing file.
pub fn resolve_files(paths: &Paths) -> Result<Vec<PathBuf>, Vec<PlanProblem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let patterns = paths.patterns();
    let many = matches!(paths, Paths::Many(_));
    for (i, pat) in patterns.iter().enumerate() {
        let key = if many {
            vec!["path".to_string(), i.to_string()]
        } else {
            vec!["path".to_string()]
        };
        if pat.contains(['*', '?', '[']) {
            match glob::glob(pat) {
                Ok(it) => {
                    let mut matched: Vec<PathBuf> =
                        it.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect();
                    matched.sort();
                    if matched.is_empty() {
                        problems.push((key, format!("no file matches `{pat}`")));
                    }
                    files.extend(matched);
                }
                Err(e) => problems.push((key, format!("invalid glob `{pat}`: {e}"))),
            }
        } else {
            let p = PathBuf::from(pat);
            if p.is_file() {
                files.push(p);
            } else if p.is_dir() {
                problems.push((
                    key,
                    format!("`{pat}` is a directory; use a glob such as `{pat}/*.parquet`"),
                ));
            } else {
                problems.push((key, format!("file `{pat}` does not exist")));
            }
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(problems)
    }
}

/// Plans a source: resolves files and reads their schemas.
///
/// # Errors
/// Every problem found, each with its key path inside the component.
pub fn plan(cfg: &SourceConfig) -> Result<SourcePlan, Vec<PlanProblem>> {
    match cfg {
        SourceConfig::Parquet(c) => parquet::plan(c),
        SourceConfig::ArrowIpc(c) => arrow_ipc::plan(c),
    }
}

/// Builds a source's lazy output stream.
pub fn build(
    cfg: &SourceConfig,
    plan: &SourcePlan,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> BatchStream {
    match cfg {
        SourceConfig::Parquet(c) => parquet::open(c.clone(), plan.clone(), ctx.clone(), metrics),
        SourceConfig::ArrowIpc(c) => arrow_ipc::open(c.clone(), plan.clone(), ctx.clone(), metrics),
    }
}

/// Checks `columns` and `rename` against a file's schema; returns the projected source column
/// indices (in `columns` order) and the output schema.
pub(crate) fn project(
    file_schema: &Schema,
    columns: Option<&[String]>,
    rename: &BTreeMap<String, String>,
) -> Result<(Vec<usize>, SchemaRef), Vec<PlanProblem>> {
    let mut problems = Vec::new();
    let names: Vec<&str> = file_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let indices: Vec<usize> = match columns {
        None => (0..file_schema.fields().len()).collect(),
        Some(cols) => {
            let mut idx = Vec::new();
            for (i, c) in cols.iter().enumerate() {
                match file_schema.index_of(c) {
                    Ok(j) => {
                        if idx.contains(&j) {
                            problems.push((
                                vec!["columns".into(), i.to_string()],
                                format!("column `{c}` is listed twice"),
                            ));
                        }
                        idx.push(j)
                    }
                    Err(_) => problems.push((
                        vec!["columns".into(), i.to_string()],
                        format!(
                            "column `{c}` is not in the file (it has: {}){}",
                            names.join(", "),
                            crate::config::yaml::suggest(c, names.iter().copied())
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default()
                        ),
                    )),
                }
            }
            idx
        }
    };
    let projected: Vec<&str> = indices.iter().map(|&i| names[i]).collect();
    for old in rename.keys() {
        if !projected.contains(&old.as_str()) {
            problems.push((
                vec!["rename".into(), old.clone()],
                format!(
                    "cannot rename `{old}`: it is not among the columns read ({})",
                    projected.join(", ")
                ),
            ));
        }
    }
    let fields: Vec<Field> = indices
        .iter()
        .map(|&i| {
            let f = file_schema.field(i);
            match rename.get(f.name()) {
                Some(new) => f.clone().with_name(new),
                None => f.clone(),
            }
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for f in &fields {
        if !seen.insert(f.name().clone()) {
            problems.push((
                vec!["rename".into()],
                format!("two output columns are named `{}`", f.name()),
            ));
        }
    }
    if problems.is_empty() {
        Ok((indices, Arc::new(Schema::new(fields))))
    } else {
        Err(problems)
    }
}

/// Re-labels a projected batch with the output schema (renames are free: same arrays).
pub(crate) fn relabel(
    batch: &RecordBatch,
    indices: &[usize],
    schema: &SchemaRef,
) -> arrow::error::Result<RecordBatch> {
    let cols = indices.iter().map(|&i| batch.column(i).clone()).collect();
    RecordBatch::try_new(schema.clone(), cols)
}

/// Checks that a file's schema agrees with the first file's for the projected columns.
pub(crate) fn same_projection(first: &SchemaRef, other: &SchemaRef) -> Option<String> {
    if first.fields().len() != other.fields().len() {
        return Some("has different columns from the first file".into());
    }
    for (a, b) in first.fields().iter().zip(other.fields()) {
        if a.name() != b.name() || a.data_type() != b.data_type() {
            return Some(format!(
                "column `{}` is {} here but {} in the first file",
                b.name(),
                b.data_type(),
                a.data_type()
            ));
        }
    }
    None
}
