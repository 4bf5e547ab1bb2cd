//! Where a run's outputs go, as the SWE-bench harness lays them out, and its run report
//! (`make_run_report`, schema_version 2). The files on disk are the run's memory: an
//! instance with a `report.json` is done, so a run started again with the same id skips
//! it (the harness's resume rule), and the run report is always rebuilt from them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiln_verify::InstanceReport;
use serde::{Deserialize, Serialize};

use super::predictions::Prediction;

pub const REPORT: &str = "report.json";
pub const TEST_OUTPUT: &str = "test_output.txt";
pub const PATCH: &str = "patch.diff";
pub const INSTANCE_LOG: &str = "run_instance.log";

/// A run's output root (`logs/run_evaluation/...` and the run report live under it).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    run_id: String,
}

impl Layout {
    pub fn new(root: &Path, run_id: &str) -> Result<Self, String> {
        check_run_id(run_id)?;
        Ok(Self {
            root: root.to_path_buf(),
            run_id: run_id.to_string(),
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// `logs/run_evaluation/<run_id>/<model>/<instance_id>/`.
    pub fn instance_dir(&self, prediction: &Prediction) -> PathBuf {
        self.root
            .join("logs/run_evaluation")
            .join(&self.run_id)
            .join(prediction.model_dir())
            .join(&prediction.instance_id)
    }

    /// `<model>.<run_id>.json`, named after the first prediction's model as the harness does.
    pub fn run_report_path(&self, first: &Prediction) -> PathBuf {
        self.root
            .join(format!("{}.{}.json", first.model_dir(), self.run_id))
    }

    /// The saved `report.json` entry of an instance, when it was run to the end.
    pub fn saved_report(&self, prediction: &Prediction) -> Option<InstanceReport> {
        let text = std::fs::read_to_string(self.instance_dir(prediction).join(REPORT)).ok()?;
        let mut map: BTreeMap<String, InstanceReport> = serde_json::from_str(&text).ok()?;
        map.remove(&prediction.instance_id)
    }
}

/// Run ids become directory names: a safe alphabet only.
pub fn check_run_id(run_id: &str) -> Result<(), String> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && !run_id.starts_with('.')
        && run_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "run id {run_id:?} must be 1-128 characters of A-Z a-z 0-9 _ - . (not starting with .)"
        ))
    }
}

/// `make_run_report`'s file, field for field (`unstopped_*`/`unremoved_images` are always
/// empty: a run leaves no sandbox behind, and images are shared, never per run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub total_instances: usize,
    pub submitted_instances: usize,
    pub completed_instances: usize,
    pub resolved_instances: usize,
    pub unresolved_instances: usize,
    pub empty_patch_instances: usize,
    pub error_instances: usize,
    pub completed_ids: Vec<String>,
    pub incomplete_ids: Vec<String>,
    pub empty_patch_ids: Vec<String>,
    pub submitted_ids: Vec<String>,
    pub resolved_ids: Vec<String>,
    pub unresolved_ids: Vec<String>,
    pub error_ids: Vec<String>,
    /// swebench 5.x (#586): unresolved or failed instances whose logs show a broken
    /// environment, or something either side could cause, and why (`infra.rs`).
    #[serde(default)]
    pub infra_failure_instances: usize,
    #[serde(default)]
    pub ambiguous_failure_instances: usize,
    #[serde(default)]
    pub infra_failure_ids: Vec<String>,
    #[serde(default)]
    pub ambiguous_failure_ids: Vec<String>,
    #[serde(default)]
    pub failure_reasons: BTreeMap<String, String>,
    pub unstopped_instances: usize,
    pub unstopped_containers: Vec<String>,
    pub unremoved_images: Vec<String>,
    pub schema_version: u32,
}

/// The harness's classification over `dataset_ids` (the dataset, narrowed by
/// `--instance-ids`): no prediction → incomplete; empty patch → empty_patch; a saved
/// report → completed and resolved or unresolved; otherwise → error.
pub fn make_run_report(
    layout: &Layout,
    dataset_ids: &[String],
    predictions: &BTreeMap<String, Prediction>,
) -> RunReport {
    let mut sets: [BTreeSet<String>; 6] = Default::default();
    let [completed, incomplete, empty, resolved, unresolved, error] = &mut sets;
    for id in dataset_ids {
        let Some(prediction) = predictions.get(id) else {
            incomplete.insert(id.clone());
            continue;
        };
        if prediction.is_empty() {
            empty.insert(id.clone());
            continue;
        }
        match layout.saved_report(prediction) {
            Some(report) => {
                completed.insert(id.clone());
                if report.resolved {
                    resolved.insert(id.clone());
                } else {
                    unresolved.insert(id.clone());
                }
            }
            None => {
                error.insert(id.clone());
            }
        }
    }
    let (mut infra, mut ambiguous) = (BTreeSet::new(), BTreeSet::new());
    let mut failure_reasons = BTreeMap::new();
    for id in unresolved.iter().chain(error.iter()) {
        let Some(prediction) = predictions.get(id) else {
            continue;
        };
        let dir = layout.instance_dir(prediction);
        let logs = [&*dir.join(TEST_OUTPUT), &*dir.join(INSTANCE_LOG)];
        if let Some((reason, tier)) = super::infra::classify_logs(&logs) {
            failure_reasons.insert(id.clone(), reason.to_string());
            match tier {
                super::infra::Tier::Environment => infra.insert(id.clone()),
                super::infra::Tier::Ambiguous => ambiguous.insert(id.clone()),
            };
        }
    }
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
    RunReport {
        total_instances: dataset_ids.len(),
        submitted_instances: predictions.len(),
        completed_instances: completed.len(),
        resolved_instances: resolved.len(),
        unresolved_instances: unresolved.len(),
        empty_patch_instances: empty.len(),
        error_instances: error.len(),
        completed_ids: list(completed),
        incomplete_ids: list(incomplete),
        empty_patch_ids: list(empty),
        submitted_ids: predictions.keys().cloned().collect(),
        resolved_ids: list(resolved),
        unresolved_ids: list(unresolved),
        error_ids: list(error),
        infra_failure_instances: infra.len(),
        ambiguous_failure_instances: ambiguous.len(),
        infra_failure_ids: list(&infra),
        ambiguous_failure_ids: list(&ambiguous),
        failure_reasons,
        unstopped_instances: 0,
        unstopped_containers: Vec::new(),
        unremoved_images: Vec::new(),
        schema_version: 2,
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash never
/// leaves a half-written `report.json` that a resumed run would take for finished work.
pub fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(id: &str, patch: Option<&str>) -> (String, Prediction) {
        (
            id.to_string(),
            Prediction {
                instance_id: id.into(),
                model_name_or_path: "org/model".into(),
                model_patch: patch.map(str::to_string),
            },
        )
    }

    fn save(layout: &Layout, p: &Prediction, resolved: bool) {
        let report = InstanceReport {
            patch_is_none: false,
            patch_exists: true,
            patch_successfully_applied: true,
            resolved,
            infra_failure: Some(false),
            infra_failure_reason: None,
            tests_status: None,
        };
        let map = BTreeMap::from([(p.instance_id.clone(), report)]);
        let path = layout.instance_dir(p).join(REPORT);
        write_atomically(&path, &serde_json::to_vec(&map).unwrap()).unwrap();
    }

    #[test]
    fn the_run_report_classifies_as_the_harness_does() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "r1").unwrap();
        let predictions: BTreeMap<_, _> = [
            prediction("gold", Some("d")),
            prediction("wrong", Some("d")),
            prediction("empty", Some("")),
            prediction("none", None),
            prediction("broken", Some("d")),
        ]
        .into();
        save(&layout, &predictions["gold"], true);
        save(&layout, &predictions["wrong"], false);
        let ids: Vec<String> = ["broken", "empty", "gold", "none", "unpredicted", "wrong"]
            .map(String::from)
            .into();
        let r = make_run_report(&layout, &ids, &predictions);
        assert_eq!(r.resolved_ids, ["gold"]);
        assert_eq!(r.unresolved_ids, ["wrong"]);
        assert_eq!(r.completed_ids, ["gold", "wrong"]);
        assert_eq!(r.empty_patch_ids, ["empty", "none"]);
        assert_eq!(r.error_ids, ["broken"]);
        assert_eq!(r.incomplete_ids, ["unpredicted"]);
        assert_eq!((r.total_instances, r.submitted_instances), (6, 5));
        assert!(dir
            .path()
            .join("logs/run_evaluation/r1/org__model/gold/report.json")
            .exists());
        assert_eq!(
            layout.run_report_path(&predictions["gold"]),
            dir.path().join("org__model.r1.json")
        );
    }

    #[test]
    fn unresolved_and_failed_instances_are_classified_from_their_logs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "r1").unwrap();
        let predictions: BTreeMap<_, _> = [
            prediction("gold", Some("d")),
            prediction("offline", Some("d")),
            prediction("wrong", Some("d")),
            prediction("slow", Some("d")),
        ]
        .into();
        save(&layout, &predictions["gold"], true);
        save(&layout, &predictions["offline"], false);
        save(&layout, &predictions["wrong"], false);
        let write = |id: &str, file: &str, text: &str| {
            let path = layout.instance_dir(&predictions[id]).join(file);
            write_atomically(&path, text.as_bytes()).unwrap();
        };
        // A resolved instance is never classified, whatever its log says.
        write("gold", TEST_OUTPUT, "Temporary failure in name resolution");
        write("offline", TEST_OUTPUT, "Could not resolve host: pypi.org");
        write("wrong", TEST_OUTPUT, "== 1 failed in 0.1s ==");
        write(
            "slow",
            INSTANCE_LOG,
            "Error: Timeout error: 60 seconds exceeded.",
        );
        let ids: Vec<String> = ["gold", "offline", "slow", "wrong"]
            .map(String::from)
            .into();
        let r = make_run_report(&layout, &ids, &predictions);
        assert_eq!(r.unresolved_ids, ["offline", "wrong"]);
        assert_eq!(r.error_ids, ["slow"]);
        assert_eq!(r.infra_failure_ids, ["offline"]);
        assert_eq!(r.ambiguous_failure_ids, ["slow"]);
        assert_eq!(
            (r.infra_failure_instances, r.ambiguous_failure_instances),
            (1, 1)
        );
        let reasons: Vec<_> = r
            .failure_reasons
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("offline", "network_unreachable"),
                ("slow", "tests_timed_out")
            ]
        );
    }

    #[test]
    fn run_ids_cannot_leave_the_directory() {
        assert!(check_run_id("../x").is_err());
        assert!(check_run_id("..").is_err());
        assert!(check_run_id("a/b").is_err());
        assert!(check_run_id("run-2026.12_06").is_ok());
    }
}
