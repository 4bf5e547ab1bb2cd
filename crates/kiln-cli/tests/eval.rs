//! `kiln eval` on the bundled demo dataset in real sandboxes: gold, empty, wrong and
//! non-applying predictions graded with the SWE-bench harness's outputs, and a run killed
//! half-way resumed without redoing what it finished. Needs root, bubblewrap and the demo
//! images (`scripts/test.sh` builds them); skipped without, unless
//! `KILN_TEST_DEMO_IMAGES=required`.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const GOLD: &str = "kiln-demo__inifile-1";
const EMPTY: &str = "kiln-demo__lrukit-1";
const WRONG: &str = "kiln-demo__semrange-1";
const BROKEN: &str = "kiln-demo__wraptext-1";
const MODEL: &str = "org/test-model";

const WRONG_PATCH: &str = "diff --git a/WRONG.txt b/WRONG.txt\nnew file mode 100644\n--- /dev/null\n+++ b/WRONG.txt\n@@ -0,0 +1 @@\n+not a fix\n";
const BROKEN_PATCH: &str = "diff --git a/no/such.py b/no/such.py\n--- a/no/such.py\n+++ b/no/such.py\n@@ -1,3 +1,3 @@\n a\n-b\n+c\n d\n";

fn images_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_IMAGES_DIR").map_or_else(
        || PathBuf::from("/var/cache/kiln-test/images"),
        PathBuf::from,
    );
    let required = std::env::var("KILN_TEST_DEMO_IMAGES").is_ok_and(|v| v == "required");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    });
    let has_images = std::fs::read_to_string(dir.join("images.json"))
        .is_ok_and(|s| s.contains("kiln-demo/python:1"));
    let why = if !root {
        "needs root"
    } else if !Path::new("/usr/bin/bwrap").exists() {
        "needs bubblewrap"
    } else if !has_images {
        "no demo images"
    } else {
        return Some(dir);
    };
    assert!(!required, "{why} (KILN_TEST_DEMO_IMAGES=required)");
    eprintln!("SKIPPED: {why}");
    None
}

fn gold_patch(id: &str) -> String {
    let samples = kiln_test_support::workspace_root().join("datasets/kiln-demo/samples.jsonl");
    let text = std::fs::read_to_string(samples).expect("demo samples");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("sample"))
        .find(|s| s["instance_id"] == id)
        .and_then(|s| s["patch"].as_str().map(str::to_string))
        .expect("gold patch")
}

struct Eval {
    data: tempfile::TempDir,
    out: tempfile::TempDir,
    images: PathBuf,
    predictions: PathBuf,
}

impl Eval {
    fn command(&self, run_id: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.args([
            "eval",
            "--dataset",
            "kiln-demo",
            "--json",
            "--run-id",
            run_id,
        ])
        .arg("--predictions")
        .arg(&self.predictions)
        .arg("--output-dir")
        .arg(self.out.path())
        .args(extra)
        .arg("--data-dir")
        .arg(self.data.path())
        .env_remove("KILN_DATABASE_URL")
        .env("KILN_IMAGES_DIR", &self.images)
        .env("KILN_AGENT_BIN", kiln_test_support::agent_binary());
        c
    }

    fn run(&self, run_id: &str, extra: &[&str]) -> (Vec<Value>, Output) {
        let out = self.command(run_id, extra).output().expect("run kiln eval");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kiln eval failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        (lines, out)
    }

    fn instance(&self, run_id: &str, id: &str) -> PathBuf {
        self.out
            .path()
            .join("logs/run_evaluation")
            .join(run_id)
            .join("org__test-model")
            .join(id)
    }

    fn run_report(&self, run_id: &str) -> Value {
        let path = self
            .out
            .path()
            .join(format!("org__test-model.{run_id}.json"));
        serde_json::from_slice(&std::fs::read(&path).expect("run report")).expect("JSON")
    }
}

fn ids(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {report}"))
        .iter()
        .map(|v| v.as_str().expect("id").to_string())
        .collect()
}

fn setup() -> Option<Eval> {
    let images = images_dir()?;
    let out = tempfile::tempdir().expect("tempdir");
    let predictions = out.path().join("preds.jsonl");
    let lines: Vec<String> = [
        (GOLD, json!(gold_patch(GOLD))),
        (EMPTY, json!("")),
        (WRONG, json!(WRONG_PATCH)),
        (BROKEN, json!(BROKEN_PATCH)),
    ]
    .into_iter()
    .map(|(id, patch)| {
        json!({"instance_id": id, "model_name_or_path": MODEL, "model_patch": patch}).to_string()
    })
    .collect();
    std::fs::write(&predictions, lines.join("\n")).expect("write predictions");
    Some(Eval {
        data: tempfile::tempdir().expect("tempdir"),
        out,
        images,
        predictions,
    })
}

#[test]
fn gold_resolves_and_empty_wrong_and_broken_patches_do_not() {
    let Some(eval) = setup() else { return };
    let started = Instant::now();
    let (lines, _) = eval.run("r1", &["--max-workers", "2"]);
    eprintln!("first run: {:.1} s", started.elapsed().as_secs_f64());
    let report = lines.last().expect("the run report");
    assert_eq!(report["schema_version"], 2);
    assert_eq!(ids(report, "resolved_ids"), [GOLD]);
    assert_eq!(ids(report, "unresolved_ids"), [WRONG]);
    assert_eq!(ids(report, "completed_ids"), [GOLD, WRONG]);
    assert_eq!(ids(report, "empty_patch_ids"), [EMPTY]);
    assert_eq!(ids(report, "error_ids"), [BROKEN]);
    assert_eq!(
        ids(report, "submitted_ids"),
        [GOLD, EMPTY, WRONG, BROKEN],
        "sorted"
    );
    assert_eq!(report["total_instances"], 9, "the whole dataset");
    assert_eq!(ids(report, "incomplete_ids").len(), 5);
    assert_eq!(&eval.run_report("r1"), &{
        let mut r = report.clone();
        r.as_object_mut().expect("object").remove("run_report");
        r
    });

    let gold: Value = serde_json::from_slice(
        &std::fs::read(eval.instance("r1", GOLD).join("report.json")).expect("gold report"),
    )
    .expect("JSON");
    let entry = &gold[GOLD];
    assert_eq!(entry["resolved"], true, "{gold}");
    assert_eq!(entry["patch_successfully_applied"], true);
    assert_eq!(entry["patch_is_None"], false);
    assert!(!entry["tests_status"]["FAIL_TO_PASS"]["success"]
        .as_array()
        .expect("list")
        .is_empty());
    assert_eq!(
        std::fs::read_to_string(eval.instance("r1", GOLD).join("patch.diff")).expect("patch"),
        gold_patch(GOLD)
    );
    assert!(
        std::fs::read_to_string(eval.instance("r1", GOLD).join("test_output.txt"))
            .expect("test output")
            .contains(">>>>> Start Test Output")
    );

    let wrong: Value = serde_json::from_slice(
        &std::fs::read(eval.instance("r1", WRONG).join("report.json")).expect("wrong report"),
    )
    .expect("JSON");
    assert_eq!(wrong[WRONG]["resolved"], false);
    assert_eq!(wrong[WRONG]["patch_successfully_applied"], true);

    let broken = eval.instance("r1", BROKEN);
    assert!(
        !broken.join("report.json").exists(),
        "no report when the patch does not apply"
    );
    let log = std::fs::read_to_string(broken.join("run_instance.log")).expect("log");
    for step in [
        "Failed to apply patch to container: git apply --verbose\n",
        "Failed to apply patch to container: git apply --verbose --reject",
        "Failed to apply patch to container: patch --batch --fuzz=5 -p1 -i",
        ">>>>> Patch Apply Failed",
    ] {
        assert!(log.contains(step), "{step:?} not in {log}");
    }
    // The model's patch, not a server fault: said as the harness says it.
    assert!(
        log.contains("Error: >>>>> Patch Apply Failed") && !log.contains("internal error"),
        "{log}"
    );
    assert!(
        !eval.instance("r1", EMPTY).exists(),
        "empty patches are not run"
    );

    // Again with the same id: what has a report is not redone, the error is retried.
    let before = std::fs::metadata(eval.instance("r1", GOLD).join("report.json"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let (lines, _) = eval.run("r1", &[]);
    let retried: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["instance_id"].as_str().expect("id"))
        .collect();
    assert_eq!(retried, [BROKEN]);
    let after = std::fs::metadata(eval.instance("r1", GOLD).join("report.json"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(before, after, "a finished instance was run again");
    assert_eq!(ids(lines.last().expect("report"), "resolved_ids"), [GOLD]);

    // `kiln eval report` writes the run report again from the saved instance reports.
    let written = eval.run_report("r1");
    let path = eval.out.path().join("org__test-model.r1.json");
    std::fs::remove_file(&path).expect("remove the run report");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["eval", "report", "r1", "--dataset", "kiln-demo", "--json"])
        .arg("--predictions")
        .arg(&eval.predictions)
        .arg("--output-dir")
        .arg(eval.out.path())
        .arg("--data-dir")
        .arg(eval.data.path())
        .env_remove("KILN_DATABASE_URL")
        .env("KILN_IMAGES_DIR", &eval.images)
        .output()
        .expect("kiln eval report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(eval.run_report("r1"), written);
}

#[test]
fn a_run_killed_half_way_resumes_where_it_stopped() {
    let Some(eval) = setup() else { return };
    let mut child = eval
        .command("crash", &["--max-workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln eval");
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = |id: &str| eval.instance("crash", id).join("report.json").exists();
    while ![GOLD, WRONG].iter().any(|id| done(id)) {
        assert!(
            Instant::now() < deadline,
            "no instance finished in 5 minutes"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "kiln eval ended early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let first = if done(GOLD) { GOLD } else { WRONG };
    let log_before =
        std::fs::read_to_string(eval.instance("crash", first).join("run_instance.log"))
            .expect("log");

    let (lines, _) = eval.run("crash", &["--max-workers", "2"]);
    let rerun: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["instance_id"].as_str().expect("id"))
        .collect();
    assert!(!rerun.contains(&first), "{first} was redone: {rerun:?}");
    let report = lines.last().expect("report");
    assert_eq!(ids(report, "resolved_ids"), [GOLD]);
    assert_eq!(ids(report, "unresolved_ids"), [WRONG]);
    assert_eq!(ids(report, "error_ids"), [BROKEN]);
    assert_eq!(
        std::fs::read_to_string(eval.instance("crash", first).join("run_instance.log"))
            .expect("log"),
        log_before
    );
}

#[test]
fn ctrl_c_stops_a_run_that_then_resumes() {
    let Some(eval) = setup() else { return };
    let mut child = eval
        .command("int", &["--max-workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kiln eval");
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = |id: &str| eval.instance("int", id).join("report.json").exists();
    while ![GOLD, WRONG].iter().any(|id| done(id)) {
        assert!(
            Instant::now() < deadline,
            "no instance finished in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "a cancelled run exits 130");
    let (lines, _) = eval.run("int", &[]);
    let report = lines.last().expect("report");
    assert_eq!(ids(report, "resolved_ids"), [GOLD]);
    assert_eq!(ids(report, "unresolved_ids"), [WRONG]);
    assert_eq!(ids(report, "error_ids"), [BROKEN]);
}
