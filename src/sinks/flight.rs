//! `type: flight` — serves training batches to trainer processes over Arrow Flight.
//!
//! (Being implemented: this module owns its config type, checks, preparation and run loop.)

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// Settings of a `flight` sink.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlightSinkConfig {
    /// Upstream components whose output is served.
    pub inputs: Vec<String>,
}

/// Checks settings against the input schema.
///
/// # Errors
/// Every problem found.
pub fn check(
    _cfg: &FlightSinkConfig,
    _input: &SchemaRef,
) -> std::result::Result<(), Vec<PlanProblem>> {
    Err(vec![(
        vec![],
        "the `flight` sink is not available in this build".into(),
    )])
}

/// A prepared (bound) Flight sink.
#[derive(Debug)]
pub struct Prepared {
    _cfg: FlightSinkConfig,
}

/// Prepares the sink before anything runs.
///
/// # Errors
/// When the sink cannot be set up.
pub fn prepare(cfg: &FlightSinkConfig, _ctx: &Ctx) -> Result<Prepared> {
    Ok(Prepared { _cfg: cfg.clone() })
}

/// Serves the input.
///
/// # Errors
/// When serving fails.
pub async fn run(
    _p: Prepared,
    _input: BatchStream,
    _ctx: Ctx,
    _metrics: Arc<ComponentMetrics>,
) -> Result<()> {
    Err(Error::Other(
        "the `flight` sink is not available in this build".into(),
    ))
}
