//! Stages: transformations between sources and sinks.
//!
//! A *function* stage (like `clean`) is stateless per batch and runs on the shared
//! [`WorkerPool`](crate::runtime::pool::WorkerPool), keeping input order unless `ordered: false`.

pub mod augment;
pub mod clean;
pub mod embed;
pub mod mine;

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};

use crate::config::StageConfig;
use crate::error::Result;
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// The schema a stage emits for `input`, or the problems that stop it from running on it.
/// `side` holds the schemas of its side inputs, in the order of
/// [`StageConfig::side_inputs`].
///
/// # Errors
/// Every missing column and type mismatch, each with its key path inside the component.
pub fn output_schema(
    cfg: &StageConfig,
    input: &SchemaRef,
    side: &[SchemaRef],
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    match cfg {
        StageConfig::Clean(c) => clean::output_schema(c, input),
        StageConfig::Augment(c) => augment::output_schema(c, input),
        StageConfig::Embed(c) => embed::output_schema(c, input),
        StageConfig::Mine(c) => mine::output_schema(c, input, side.first()),
    }
}

/// Builds a stage's lazy output stream over `input` (its `inputs`, merged) and `side` (its
/// side inputs, in the order of [`StageConfig::side_inputs`]).
///
/// # Errors
/// When the stage cannot be set up (resources, pool capacity).
pub fn build(
    name: &str,
    cfg: &StageConfig,
    input: BatchStream,
    side: Vec<BatchStream>,
    ctx: &Ctx,
    metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    match cfg {
        StageConfig::Clean(c) => clean::build(name, c, input, ctx, metrics),
        StageConfig::Augment(c) => augment::build(name, c, input, ctx, metrics),
        StageConfig::Embed(c) => embed::build(name, c, input, ctx, metrics),
        StageConfig::Mine(c) => mine::build(name, c, input, side.into_iter().next(), ctx, metrics),
    }
}

/// The stage's own output channel capacity, if it sets one.
pub fn buffer(cfg: &StageConfig) -> Option<usize> {
    match cfg {
        StageConfig::Clean(c) => c.buffer,
        StageConfig::Augment(c) => c.buffer,
        StageConfig::Embed(c) => c.buffer,
        StageConfig::Mine(c) => c.buffer,
    }
}

/// Checks that `column` exists in `schema` and satisfies `ok`; `want` describes the expected
/// type for the message.
pub(crate) fn require_column(
    schema: &SchemaRef,
    column: &str,
    key: Vec<String>,
    want: &str,
    ok: impl Fn(&DataType) -> bool,
    problems: &mut Vec<PlanProblem>,
) {
    match schema.field_with_name(column) {
        Ok(f) if ok(f.data_type()) => {}
        Ok(f) => problems.push((
            key,
            format!("column `{column}` is {}, expected {want}", f.data_type()),
        )),
        Err(_) => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let hint = crate::config::yaml::suggest(column, names.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            problems.push((
                key,
                format!(
                    "column `{column}` is not in the input (it has: {}){hint}",
                    names.join(", ")
                ),
            ))
        }
    }
}
