//! `type: augment` — augmented views of records on parallel workers.
//!
//! (Being implemented: this module owns its config type, schema check and stream.)

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::runtime::Ctx;
use crate::runtime::metrics::ComponentMetrics;
use crate::sources::PlanProblem;
use crate::stream::BatchStream;

/// Settings of a `augment` stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentStageConfig {
    /// Upstream components whose output this stage reads.
    pub inputs: Vec<String>,
    /// Capacity in batches of this stage's output channel(s); default `runtime.channel_capacity`.
    #[serde(default)]
    pub buffer: Option<usize>,
}

/// The schema this stage emits for `input`.
///
/// # Errors
/// Every problem found, with its key path inside the component.
pub fn output_schema(
    _cfg: &AugmentStageConfig,
    _input: &SchemaRef,
) -> std::result::Result<SchemaRef, Vec<PlanProblem>> {
    Err(vec![(
        vec![],
        "the `augment` stage is not available in this build".into(),
    )])
}

/// Builds the stage's lazy output stream.
///
/// # Errors
/// When the stage cannot be set up.
pub fn build(
    _name: &str,
    _cfg: &AugmentStageConfig,
    _input: BatchStream,
    _ctx: &Ctx,
    _metrics: Arc<ComponentMetrics>,
) -> Result<BatchStream> {
    Err(Error::Other(
        "the `augment` stage is not available in this build".into(),
    ))
}
