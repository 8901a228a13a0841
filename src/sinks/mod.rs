//! Sinks: where results leave a pipeline.

pub mod channel;
pub mod flight;
pub mod manifest;
pub mod parquet_shards;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;

use crate::config::SinkConfig;
use crate::error::Result;
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// Checks a sink's settings against its input schema.
///
/// # Errors
/// Every problem found, each with its key path inside the component.
pub fn check(cfg: &SinkConfig, input: &SchemaRef) -> std::result::Result<(), Vec<PlanProblem>> {
    match cfg {
        SinkConfig::ParquetShards(c) => parquet_shards::check(c, input),
        SinkConfig::Flight(c) => flight::check(c, input),
    }
}

/// A sink whose output location has been checked and prepared.
#[derive(Debug)]
pub enum Prepared {
    /// A prepared `parquet_shards` sink.
    ParquetShards(parquet_shards::Prepared),
    /// A prepared `flight` sink.
    Flight(flight::Prepared),
}

/// Checks and prepares a sink's output before anything runs (refuses a non-empty directory
/// unless overwriting).
///
/// # Errors
/// When the output location is unusable.
pub fn prepare(cfg: &SinkConfig, ctx: &Ctx) -> Result<Prepared> {
    match cfg {
        SinkConfig::ParquetShards(c) => {
            parquet_shards::prepare(c, ctx).map(Prepared::ParquetShards)
        }
        SinkConfig::Flight(c) => flight::prepare(c, ctx).map(Prepared::Flight),
    }
}

/// Runs a prepared sink over its input.
pub fn run(
    p: Prepared,
    input: BatchStream,
    ctx: Ctx,
    metrics: Arc<ComponentMetrics>,
) -> BoxFuture<'static, Result<()>> {
    match p {
        Prepared::ParquetShards(p) => Box::pin(parquet_shards::run(p, input, ctx, metrics)),
        Prepared::Flight(p) => Box::pin(flight::run(p, input, ctx, metrics)),
    }
}
