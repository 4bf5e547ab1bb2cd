//! Shapes of the parallel-run routes. Responses are the service's records as JSON.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new eval run: a model's predictions on a dataset, graded as the SWE-bench harness
/// grades them.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCreateRequest {
    pub dataset: String,
    /// The harness's predictions: a list of `{instance_id, model_name_or_path,
    /// model_patch}`, or an object of them keyed by instance id.
    #[schema(value_type = Object)]
    pub predictions: serde_json::Value,
    /// Narrow the dataset to these instances.
    #[serde(default)]
    pub instance_ids: Option<Vec<String>>,
    /// Instances evaluated at once (`eval.default_max_workers`, at most `eval.max_workers`).
    #[serde(default)]
    pub max_workers: Option<usize>,
    /// Seconds one instance may take (`eval.default_timeout_secs`).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Reuse a run id to resume it: instances with a report are not run again.
    #[serde(default)]
    pub run_id: Option<String>,
}

/// A run, its members or its results (the service's JSON).
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RunBody(pub serde_json::Value);
