//! Eval runs on the server (`/v1/parallel/runs`): the same runner as `kiln eval`, started
//! by a request, owned by its caller, watched while it runs. A run's outputs live under
//! `<data-dir>/eval-runs/<user>/<run_id>/` in the harness's layout; the registry of runs is
//! in memory (a restart forgets the list; posting the same run id again resumes from the
//! files, as `kiln eval` does).
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_config::EvalConfig;
use serde::Serialize;

use super::{plan, run, EvalError, EvalRequest, Finished, Layout, Predictions, RunReport};
use crate::datasets::DatasetService;
use crate::error::{ServiceError, ServiceResult};
use crate::sessions::SessionService;

/// What a caller asks for.
pub struct NewRun {
    pub dataset: String,
    /// The predictions, in any of the harness's JSON shapes.
    pub predictions: serde_json::Value,
    pub instance_ids: Option<Vec<String>>,
    pub max_workers: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub run_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    Cancelled,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub instance_id: String,
    /// `queued`, `resolved`, `unresolved`, `error`, `empty_patch`, `done_before`.
    pub status: String,
    pub error: Option<String>,
    pub timing: Option<super::Timing>,
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub dataset: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub to_run: usize,
    pub finished: usize,
    pub resolved: usize,
    pub errors: usize,
    pub error: Option<String>,
    /// The run report (`make_run_report`), once the run has ended.
    pub report: Option<RunReport>,
    /// What the last re-grade did, if the run was re-graded.
    pub regrade: Option<super::regrade::RegradeSummary>,
}

struct Run {
    user_id: String,
    view: Mutex<RunView>,
    members: Mutex<BTreeMap<String, Member>>,
    layout: Layout,
    predictions: Predictions,
    /// The run report's universe (`EvalPlan::dataset_ids`), for re-grades.
    dataset_ids: Vec<String>,
    /// A re-grade is writing the run's reports.
    regrading: AtomicBool,
    cancel: tokio::sync::watch::Sender<bool>,
    /// Bumped at every change, for streams.
    changes: tokio::sync::watch::Sender<u64>,
}

pub struct ParallelRuns {
    sessions: Arc<SessionService>,
    root: PathBuf,
    config: EvalConfig,
    runs: Mutex<HashMap<String, Arc<Run>>>,
}

impl ParallelRuns {
    pub fn new(sessions: Arc<SessionService>, root: PathBuf, config: EvalConfig) -> Self {
        Self {
            sessions,
            root,
            config,
            runs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans the run (the harness's checks: 422 on ids the dataset does not have) and
    /// starts it in the background.
    pub async fn start(
        &self,
        datasets: &DatasetService,
        user_id: &str,
        new: NewRun,
    ) -> ServiceResult<RunView> {
        let invalid =
            |field: &str, msg: String| ServiceError::invalid(&[field], msg, "value_error");
        let predictions = super::parse_predictions(&new.predictions.to_string())
            .map_err(|e| invalid("predictions", e))?;
        if predictions.by_id.len() > self.config.max_predictions {
            return Err(invalid(
                "predictions",
                format!(
                    "at most {} predictions per run",
                    self.config.max_predictions
                ),
            ));
        }
        let max_workers = new.max_workers.unwrap_or(self.config.default_max_workers);
        if max_workers == 0 || max_workers > self.config.max_workers {
            return Err(invalid(
                "max_workers",
                format!("must be between 1 and {}", self.config.max_workers),
            ));
        }
        let timeout = new.timeout_secs.unwrap_or(self.config.default_timeout_secs);
        if timeout == 0 || timeout > self.config.max_timeout_secs {
            return Err(invalid(
                "timeout_secs",
                format!("must be between 1 and {}", self.config.max_timeout_secs),
            ));
        }
        let run_id = new.run_id.unwrap_or_else(|| crate::new_id("run"));
        let layout =
            Layout::new(&self.root.join(user_id), &run_id).map_err(|e| invalid("run_id", e))?;
        let key = format!("{user_id}/{run_id}");
        {
            let runs = self.lock();
            let running =
                |r: &&Arc<Run>| r.user_id == user_id && view_of(r).status == RunStatus::Running;
            if runs.get(&key).is_some_and(|r| running(&r)) {
                return Err(ServiceError::Conflict(format!("run {run_id} is running")));
            }
            // A resume would write the files a re-grade is rewriting.
            if runs
                .get(&key)
                .is_some_and(|r| r.regrading.load(Ordering::Acquire))
            {
                return Err(ServiceError::Conflict(format!(
                    "run {run_id} is being re-graded"
                )));
            }
            if runs.values().filter(running).count() >= self.config.max_running_per_user {
                return Err(ServiceError::LimitExceeded(format!(
                    "{} runs are running; wait for one to end",
                    self.config.max_running_per_user
                )));
            }
        }
        let request = EvalRequest {
            dataset: new.dataset,
            predictions,
            instance_ids: new.instance_ids,
            max_workers,
            timeout: Duration::from_secs(timeout),
        };
        let planned = plan(datasets, &request, &layout, Some(user_id))
            .await
            .map_err(|e| match e {
                EvalError::Invalid(msg) => invalid("predictions", msg),
                EvalError::Service(e) => e,
                other => ServiceError::Internal(other.to_string()),
            })?;
        let mut members = BTreeMap::new();
        let mut member = |id: &str, status: &str| {
            members.insert(
                id.to_string(),
                Member {
                    instance_id: id.to_string(),
                    status: status.into(),
                    error: None,
                    timing: None,
                },
            );
        };
        planned
            .to_run
            .iter()
            .for_each(|p| member(&p.instance_id, "queued"));
        planned
            .empty
            .iter()
            .for_each(|id| member(id, "empty_patch"));
        planned
            .already_done
            .iter()
            .for_each(|id| member(id, "done_before"));
        let run = Arc::new(Run {
            user_id: user_id.to_string(),
            view: Mutex::new(RunView {
                run_id: run_id.clone(),
                dataset: request.dataset.clone(),
                status: RunStatus::Running,
                created_at: Utc::now(),
                finished_at: None,
                to_run: planned.to_run.len(),
                finished: 0,
                resolved: 0,
                errors: 0,
                error: None,
                report: None,
                regrade: None,
            }),
            members: Mutex::new(members),
            layout: layout.clone(),
            predictions: request.predictions.clone(),
            dataset_ids: planned.dataset_ids.clone(),
            regrading: AtomicBool::new(false),
            cancel: tokio::sync::watch::channel(false).0,
            changes: tokio::sync::watch::channel(0).0,
        });
        self.lock().insert(key, run.clone());
        let sessions = self.sessions.clone();
        let (user, task_run) = (user_id.to_string(), run.clone());
        tokio::spawn(async move {
            let on_finished = |f: &Finished| task_run.finished(f);
            let cancel = task_run.cancel.subscribe();
            let outcome = run_to_end(
                &sessions,
                &user,
                &request,
                &planned,
                &task_run.layout,
                on_finished,
                cancel,
            )
            .await;
            task_run.end(outcome);
        });
        Ok(view_of(&run))
    }

    fn get_run(&self, user_id: &str, run_id: &str) -> ServiceResult<Arc<Run>> {
        self.lock()
            .get(&format!("{user_id}/{run_id}"))
            .cloned()
            .ok_or_else(|| ServiceError::not_found(format!("run {run_id}")))
    }

    pub fn list(&self, user_id: &str) -> Vec<RunView> {
        let mut views: Vec<RunView> = self
            .lock()
            .values()
            .filter(|r| r.user_id == user_id)
            .map(view_of)
            .collect();
        views.sort_by_key(|v| v.created_at);
        views
    }

    pub fn get(&self, user_id: &str, run_id: &str) -> ServiceResult<RunView> {
        Ok(view_of(&self.get_run(user_id, run_id)?))
    }

    pub fn cancel(&self, user_id: &str, run_id: &str) -> ServiceResult<RunView> {
        let run = self.get_run(user_id, run_id)?;
        run.cancel.send_replace(true);
        Ok(view_of(&run))
    }

    pub fn members(&self, user_id: &str, run_id: &str) -> ServiceResult<Vec<Member>> {
        let run = self.get_run(user_id, run_id)?;
        let members = run.members.lock().unwrap_or_else(|p| p.into_inner());
        Ok(members.values().cloned().collect())
    }

    /// The saved `report.json` entries, by instance id.
    pub fn results(
        &self,
        user_id: &str,
        run_id: &str,
    ) -> ServiceResult<BTreeMap<String, kiln_verify::InstanceReport>> {
        let run = self.get_run(user_id, run_id)?;
        Ok(run
            .predictions
            .by_id
            .values()
            .filter_map(|p| Some((p.instance_id.clone(), run.layout.saved_report(p)?)))
            .collect())
    }

    /// Grades the run's saved test logs again (`regrade`), rewrites the reports that
    /// changed and the run report, and says what changed. A running run is a conflict:
    /// its files are still being written.
    pub async fn regrade(
        &self,
        datasets: &DatasetService,
        user_id: &str,
        run_id: &str,
    ) -> ServiceResult<RunView> {
        let run = self.get_run(user_id, run_id)?;
        let view = view_of(&run);
        if view.status == RunStatus::Running {
            return Err(ServiceError::Conflict(format!("run {run_id} is running")));
        }
        if run.regrading.swap(true, Ordering::AcqRel) {
            return Err(ServiceError::Conflict(format!(
                "run {run_id} is being re-graded"
            )));
        }
        let outcome =
            super::regrade::regrade_run(datasets, &view.dataset, &run.layout, &run.predictions)
                .await;
        let rebuilt = outcome.and_then(|(summary, verdicts)| {
            let report = super::write_run_report(&run.layout, &run.dataset_ids, &run.predictions)
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            Ok((summary, verdicts, report))
        });
        run.regrading.store(false, Ordering::Release);
        let (summary, verdicts, report) = rebuilt?;
        run.regraded(summary, &verdicts, report);
        Ok(view_of(&run))
    }

    /// A receiver that changes whenever the run does, for progress streams.
    pub fn watch(
        &self,
        user_id: &str,
        run_id: &str,
    ) -> ServiceResult<tokio::sync::watch::Receiver<u64>> {
        Ok(self.get_run(user_id, run_id)?.changes.subscribe())
    }
}

fn view_of(run: &Arc<Run>) -> RunView {
    run.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn run_to_end(
    sessions: &Arc<SessionService>,
    user: &str,
    request: &EvalRequest,
    planned: &super::EvalPlan,
    layout: &Layout,
    on_finished: impl FnMut(&Finished),
    cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<RunReport, EvalError> {
    run(
        sessions,
        user,
        request,
        planned,
        layout,
        on_finished,
        cancel,
    )
    .await
}

impl Run {
    fn finished(&self, f: &Finished) {
        {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.finished += 1;
            view.resolved += usize::from(f.resolved == Some(true));
            view.errors += usize::from(f.resolved.is_none());
        }
        let status = match f.resolved {
            Some(true) => "resolved",
            Some(false) => "unresolved",
            None => "error",
        };
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.insert(
            f.instance_id.clone(),
            Member {
                instance_id: f.instance_id.clone(),
                status: status.into(),
                error: f.error.clone(),
                timing: Some(f.timing.clone()),
            },
        );
        drop(members);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Takes a re-grade's verdicts into the members and counts, and its run report.
    fn regraded(
        &self,
        summary: super::regrade::RegradeSummary,
        verdicts: &BTreeMap<String, bool>,
        report: RunReport,
    ) {
        {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            for (id, resolved) in verdicts {
                if let Some(m) = members
                    .get_mut(id)
                    .filter(|m| matches!(m.status.as_str(), "resolved" | "unresolved"))
                {
                    m.status = if *resolved { "resolved" } else { "unresolved" }.into();
                }
            }
            let resolved = members.values().filter(|m| m.status == "resolved").count();
            drop(members);
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.resolved = resolved;
            view.report = Some(report);
            view.regrade = Some(summary);
        }
        self.changes.send_modify(|n| *n += 1);
    }

    fn end(&self, outcome: Result<RunReport, EvalError>) {
        {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            view.finished_at = Some(Utc::now());
            match outcome {
                Ok(report) => {
                    view.status = if *self.cancel.borrow() {
                        RunStatus::Cancelled
                    } else {
                        RunStatus::Completed
                    };
                    view.report = Some(report);
                }
                Err(e) => {
                    view.status = RunStatus::Failed;
                    view.error = Some(e.to_string());
                }
            }
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

/// Where a user's runs keep their files.
pub fn runs_root(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("eval-runs")
}
