//! Eval runs: a model's predictions on a dataset, graded as the SWE-bench harness grades
//! them (`run_evaluation`), with its outputs. For each instance a fresh session on the
//! sample, the harness's apply chain, a verification, and `report.json`; at most
//! `max_workers` at once; each bounded by a timeout; cancellable. The run's state is its
//! files (see [`layout`]): started again with the same run id, a run skips what is done.
pub mod infra;
pub mod instance;
pub mod layout;
pub mod parallel;
pub mod predictions;
pub mod regrade;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_store::SampleQuery;
use serde::Serialize;

use crate::datasets::DatasetService;
use crate::error::ServiceError;
use crate::sessions::SessionService;

pub use instance::{InstanceRun, Timing};
pub use layout::{make_run_report, Layout, RunReport};
pub use predictions::{parse_predictions, Prediction, Predictions};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The request does not fit the dataset (unknown ids, nothing to run…).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What to evaluate.
pub struct EvalRequest {
    pub dataset: String,
    pub predictions: Predictions,
    /// Narrows the dataset, as the harness's `--instance_ids`.
    pub instance_ids: Option<Vec<String>>,
    pub max_workers: usize,
    pub timeout: Duration,
}

/// The work a run has to do, decided before it starts.
#[derive(Debug, Clone)]
pub struct EvalPlan {
    /// The dataset's ids, narrowed by `instance_ids`: the run report's universe.
    pub dataset_ids: Vec<String>,
    /// What will run, longest first (by the number of tests the sample expects, the
    /// only duration hint a record carries).
    pub to_run: Vec<Prediction>,
    /// Instances a previous attempt of this run finished (they have a `report.json`).
    pub already_done: Vec<String>,
    /// Empty patches: never run, listed as such in the report.
    pub empty: Vec<String>,
}

/// The harness's checks and selection (`get_dataset_from_preds`), in one place.
/// `viewer`: the account a run over HTTP is for (it sees public datasets and its org's
/// private ones); `None` for the operator's CLI, which sees every dataset.
pub async fn plan(
    datasets: &DatasetService,
    request: &EvalRequest,
    layout: &Layout,
    viewer: Option<&str>,
) -> Result<EvalPlan, EvalError> {
    let page = datasets
        .list_samples(&SampleQuery {
            dataset: Some(request.dataset.clone()),
            visible_to: viewer.map(str::to_string),
            ..SampleQuery::default()
        })
        .await?;
    if page.samples.is_empty() {
        return Err(ServiceError::not_found(format!(
            "dataset {} (or it has no samples)",
            request.dataset
        ))
        .into());
    }
    let known: BTreeSet<&str> = page.samples.iter().map(|s| s.sample_id.as_str()).collect();
    let missing = unknown(&known, request.predictions.by_id.keys());
    if !missing.is_empty() {
        return Err(EvalError::Invalid(format!(
            "some prediction ids are not in dataset {}: {}",
            request.dataset,
            missing.join(" ")
        )));
    }
    if let Some(ids) = &request.instance_ids {
        let missing = unknown(&known, ids.iter());
        if !missing.is_empty() {
            return Err(EvalError::Invalid(format!(
                "some instance ids are not in dataset {}: {}",
                request.dataset,
                missing.join(" ")
            )));
        }
    }
    let wanted = |id: &str| {
        request
            .instance_ids
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == id))
    };
    let mut samples: Vec<_> = page
        .samples
        .iter()
        .filter(|s| wanted(&s.sample_id))
        .collect();
    let dataset_ids = samples.iter().map(|s| s.sample_id.clone()).collect();
    samples.sort_by_key(|s| {
        std::cmp::Reverse(s.record.fail_to_pass.len() + s.record.pass_to_pass.len())
    });
    let mut plan = EvalPlan {
        dataset_ids,
        to_run: Vec::new(),
        already_done: Vec::new(),
        empty: Vec::new(),
    };
    for sample in samples {
        let Some(prediction) = request.predictions.by_id.get(&sample.sample_id) else {
            continue;
        };
        if prediction.is_empty() {
            plan.empty.push(sample.sample_id.clone());
        } else if layout.saved_report(prediction).is_some() {
            plan.already_done.push(sample.sample_id.clone());
        } else {
            plan.to_run.push(prediction.clone());
        }
    }
    Ok(plan)
}

fn unknown<'a>(known: &BTreeSet<&str>, ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    ids.filter(|id| !known.contains(id.as_str()))
        .cloned()
        .collect()
}

/// What a run reports as it goes.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub instance_id: String,
    /// `None`: no report (the patch did not apply, timeout, error).
    pub resolved: Option<bool>,
    pub error: Option<String>,
    pub timing: Timing,
}

/// Runs `plan.to_run`, `max_workers` at once, writing each instance's files as it
/// finishes, then the run report. Cancelling stops new instances and ends the running
/// ones (their sessions closed, no report written: they run again on resume).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    sessions: &Arc<SessionService>,
    user_id: &str,
    request: &EvalRequest,
    plan: &EvalPlan,
    layout: &Layout,
    mut on_finished: impl FnMut(&Finished),
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<RunReport, EvalError> {
    let queue = Arc::new(Mutex::new(
        plan.to_run.iter().cloned().collect::<VecDeque<_>>(),
    ));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..request.max_workers.clamp(1, plan.to_run.len().max(1)) {
        let (queue, tx, cancel) = (queue.clone(), tx.clone(), cancel.clone());
        let sessions = sessions.clone();
        let (user, dataset, timeout) = (
            user_id.to_string(),
            request.dataset.clone(),
            request.timeout,
        );
        workers.spawn(async move {
            loop {
                if *cancel.borrow() {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(prediction) = next else { return };
                let input = instance::InstanceInput {
                    user_id: &user,
                    dataset: &dataset,
                    instance_id: &prediction.instance_id,
                    patch: prediction.model_patch.as_deref().unwrap_or_default(),
                    timeout,
                };
                let outcome = instance::run_instance(&sessions, input, cancel.clone()).await;
                if tx.send((prediction, outcome)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    while let Some((prediction, outcome)) = rx.recv().await {
        save_instance(layout, &prediction, &outcome)?;
        on_finished(&Finished {
            instance_id: prediction.instance_id.clone(),
            resolved: outcome.report.as_ref().map(|r| r.resolved),
            error: outcome.error.clone(),
            timing: outcome.timing.clone(),
        });
    }
    while workers.join_next().await.is_some() {}
    write_run_report(layout, &plan.dataset_ids, &request.predictions)
}

/// Rebuilds the run report from the saved instance files and writes it.
pub fn write_run_report(
    layout: &Layout,
    dataset_ids: &[String],
    predictions: &Predictions,
) -> Result<RunReport, EvalError> {
    let report = make_run_report(layout, dataset_ids, &predictions.by_id);
    let path = layout.run_report_path(predictions.first());
    let text =
        serde_json::to_vec_pretty(&report).map_err(|e| ServiceError::Internal(e.to_string()))?;
    write(&path, &text)?;
    Ok(report)
}

/// The harness's files for one instance; `report.json` last, so that it exists only
/// beside complete logs.
fn save_instance(
    layout: &Layout,
    prediction: &Prediction,
    outcome: &InstanceRun,
) -> Result<(), EvalError> {
    let dir = layout.instance_dir(prediction);
    let patch = prediction.model_patch.as_deref().unwrap_or_default();
    write(&dir.join(layout::PATCH), patch.as_bytes())?;
    let mut log = outcome.log.join("\n");
    let t = &outcome.timing;
    log.push_str(&format!(
        "\nTiming (s): create {:.3}, apply {:.3}, tests {:.3}, grade {:.3}, total {:.3}\n",
        t.create, t.apply, t.tests, t.grade, t.total
    ));
    write(&dir.join(layout::INSTANCE_LOG), log.as_bytes())?;
    let output = dir.join(layout::TEST_OUTPUT);
    match &outcome.test_output {
        Some(text) => write(&output, text.as_bytes())?,
        None => {
            let _ = std::fs::remove_file(&output);
        }
    }
    if let Some(report) = &outcome.report {
        let map = std::collections::BTreeMap::from([(prediction.instance_id.clone(), report)]);
        let text =
            serde_json::to_vec_pretty(&map).map_err(|e| ServiceError::Internal(e.to_string()))?;
        write(&dir.join(layout::REPORT), &text)?;
    }
    Ok(())
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), EvalError> {
    layout::write_atomically(path, bytes).map_err(|source| EvalError::Write {
        path: path.display().to_string(),
        source,
    })
}
