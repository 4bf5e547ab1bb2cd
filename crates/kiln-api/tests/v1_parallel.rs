//! `/v1/parallel/runs` over real HTTP with real sandboxes on the demo dataset: a gold and
//! a wrong prediction run in parallel, progress streams, the run report's lists say which
//! resolved; another user sees none of it. Needs root, bubblewrap and the demo images
//! (skipped without, unless `KILN_TEST_DEMO_IMAGES=required`).
use crate::{common, sandbox};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const GOLD: &str = "kiln-demo__inifile-1";
const WRONG: &str = "kiln-demo__semrange-1";

fn demo_images() -> Option<PathBuf> {
    let dir = std::env::var_os("KILN_TEST_IMAGES_DIR").map_or_else(
        || PathBuf::from("/var/cache/kiln-test/images"),
        PathBuf::from,
    );
    let required = std::env::var("KILN_TEST_DEMO_IMAGES").is_ok_and(|v| v == "required");
    if std::fs::read_to_string(dir.join("images.json"))
        .is_ok_and(|s| s.contains("kiln-demo/python:1"))
    {
        return Some(dir);
    }
    assert!(
        !required,
        "no demo images in {} (KILN_TEST_DEMO_IMAGES=required)",
        dir.display()
    );
    eprintln!("SKIPPED: no demo images in {}", dir.display());
    None
}

fn gold_patch(id: &str) -> String {
    let samples = kiln_test_support::workspace_root().join("datasets/kiln-demo/samples.jsonl");
    std::fs::read_to_string(samples)
        .expect("demo samples")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("sample"))
        .find(|s| s["instance_id"] == id)
        .and_then(|s| s["patch"].as_str().map(str::to_string))
        .expect("gold patch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_run_grades_gold_and_wrong_predictions() {
    if !sandbox::prerequisites() {
        return;
    }
    let Some(images) = demo_images() else { return };
    let agent = sandbox::agent_binary();
    let server = TestServer::start_with(|c| {
        c.images_dir = Some(images);
        c.load_demo_dataset = true;
        c.build_demo_images = false;
        c.runtime.agent_binary = Some(agent);
    })
    .await;
    let (user_id, key) = server.user("evaluator").await;
    let (_, other) = server.user("someone-else").await;
    let wrong = "diff --git a/WRONG.txt b/WRONG.txt\nnew file mode 100644\n--- /dev/null\n+++ b/WRONG.txt\n@@ -0,0 +1 @@\n+not a fix\n";
    let body = json!({
        "dataset": "kiln-demo",
        "predictions": [
            {"instance_id": GOLD, "model_name_or_path": "m", "model_patch": gold_patch(GOLD)},
            {"instance_id": WRONG, "model_name_or_path": "m", "model_patch": wrong},
        ],
        "instance_ids": [GOLD, WRONG],
        "max_workers": 2,
        "run_id": "api-run",
    });
    let (status, run) = server
        .v1_as(&key, Method::POST, "/parallel/runs", Some(&body))
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(run["status"], "running");
    assert_eq!(run["to_run"], 2);
    // Its files are being written: no re-grade until it ends (its first instance needs a
    // sandbox and a test run, seconds; this request takes milliseconds).
    let (status, body) = server
        .v1_as(&key, Method::POST, "/parallel/runs/api-run/regrade", None)
        .await;
    assert_eq!(status, 409, "{body}");

    // Someone else's run does not exist for them.
    for path in ["/parallel/runs/api-run", "/parallel/runs/api-run/members"] {
        let (status, _) = server.v1_as(&other, Method::GET, path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    for path in [
        "/parallel/runs/api-run/cancel",
        "/parallel/runs/api-run/regrade",
    ] {
        let (status, _) = server.v1_as(&other, Method::POST, path, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (_, list) = server
        .v1_as(&other, Method::GET, "/parallel/runs", None)
        .await;
    assert_eq!(list["runs"], json!([]));

    // The stream ends with the finished run.
    let text = server
        .v1(Method::GET, "/parallel/runs/api-run/stream")
        .header("Authorization", common::bearer(&key))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("stream body");
    assert!(text.contains("event: end"), "{text}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, run) = server
            .v1_as(&key, Method::GET, "/parallel/runs/api-run", None)
            .await;
        if run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["report"]["resolved_ids"], json!([GOLD]), "{run}");
    assert_eq!(run["report"]["unresolved_ids"], json!([WRONG]));
    assert_eq!(run["report"]["total_instances"], 2);
    assert_eq!(run["report"]["schema_version"], 2);

    let (_, members) = server
        .v1_as(&key, Method::GET, "/parallel/runs/api-run/members", None)
        .await;
    let statuses: Vec<(&str, &str)> = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["instance_id"].as_str().expect("id"),
                m["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(statuses, [(GOLD, "resolved"), (WRONG, "unresolved")]);
    let (_, results) = server
        .v1_as(&key, Method::GET, "/parallel/runs/api-run/results", None)
        .await;
    assert_eq!(results[GOLD]["resolved"], true, "{results}");
    assert!(results[GOLD]["tests_status"]["FAIL_TO_PASS"]["success"].is_array());

    regrade_after_a_log_changes(&server, &key, &user_id).await;

    // A prediction for an instance the dataset lacks is a 422 before anything runs.
    let bad = json!({"dataset": "kiln-demo", "predictions": [
        {"instance_id": "nope", "model_name_or_path": "m", "model_patch": "x"}]});
    let (status, body) = server
        .v1_as(&key, Method::POST, "/parallel/runs", Some(&bad))
        .await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_and_says_so() {
    if !sandbox::prerequisites() {
        return;
    }
    let Some(images) = demo_images() else { return };
    let agent = sandbox::agent_binary();
    let server = TestServer::start_with(|c| {
        c.images_dir = Some(images);
        c.load_demo_dataset = true;
        c.build_demo_images = false;
        c.runtime.agent_binary = Some(agent);
    })
    .await;
    let (_, key) = server.user("evaluator").await;
    let ids = [GOLD, WRONG, "kiln-demo__wraptext-1", "kiln-demo__lrukit-1"];
    let predictions: Vec<Value> = ids
        .iter()
        .map(|id| json!({"instance_id": id, "model_name_or_path": "m", "model_patch": gold_patch(id)}))
        .collect();
    let body = json!({"dataset": "kiln-demo", "predictions": predictions, "max_workers": 1});
    let (status, run) = server
        .v1_as(&key, Method::POST, "/parallel/runs", Some(&body))
        .await;
    assert_eq!(status, 201, "{run}");
    let path = format!("/parallel/runs/{}", run["run_id"].as_str().expect("id"));
    let (status, _) = server
        .v1_as(&key, Method::POST, &format!("{path}/cancel"), None)
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let (_, run) = server.v1_as(&key, Method::GET, &path, None).await;
        if run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "{run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["finished"].as_u64().expect("finished") < 4,
        "nothing new starts after a cancel: {run}"
    );
    let (_, members) = server
        .v1_as(&key, Method::GET, &format!("{path}/members"), None)
        .await;
    assert!(
        members["members"]
            .as_array()
            .expect("members")
            .iter()
            .any(|m| m["status"] == "queued"),
        "{members}"
    );
}

/// A FAIL_TO_PASS test of the gold instance turned failed in its saved log: a re-grade
/// makes it unresolved, in its results and in the run report; the wrong one is re-graded
/// and stays unresolved.
async fn regrade_after_a_log_changes(server: &TestServer, key: &str, user_id: &str) {
    let output = server
        .kiln
        .config
        .data_dir
        .join("eval-runs")
        .join(user_id)
        .join("logs/run_evaluation/api-run/m")
        .join(GOLD)
        .join("test_output.txt");
    let log = std::fs::read_to_string(&output).expect("gold test output");
    let test = "tests/test_parser.py::test_quoted_value_followed_by_inline_comment";
    let passed = format!("PASSED {test}");
    assert!(log.contains(&passed), "{log}");
    std::fs::write(&output, log.replace(&passed, &format!("FAILED {test}"))).expect("edit the log");

    let (status, run) = server
        .v1_as(key, Method::POST, "/parallel/runs/api-run/regrade", None)
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["regrade"]["regraded"], 2, "{run}");
    assert_eq!(run["regrade"]["changed"], 1, "{run}");
    assert_eq!(run["regrade"]["changed_ids"], json!([GOLD]));
    assert_eq!(run["resolved"], 0, "{run}");
    assert_eq!(run["report"]["resolved_ids"], json!([]), "{run}");
    assert_eq!(run["report"]["unresolved_ids"], json!([GOLD, WRONG]));
    let (_, results) = server
        .v1_as(key, Method::GET, "/parallel/runs/api-run/results", None)
        .await;
    assert_eq!(results[GOLD]["resolved"], false, "{results}");
    assert_eq!(
        results[GOLD]["tests_status"]["FAIL_TO_PASS"]["failure"],
        json!([test]),
        "{results}"
    );
    assert_eq!(results[WRONG]["resolved"], false, "{results}");
    let report_file = server
        .kiln
        .config
        .data_dir
        .join(format!("eval-runs/{user_id}/m.api-run.json"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(report_file).expect("run report")).expect("json");
    assert_eq!(report["resolved_ids"], json!([]), "{report}");

    // Put back, graded back.
    std::fs::write(&output, log).expect("restore the log");
    let (_, run) = server
        .v1_as(key, Method::POST, "/parallel/runs/api-run/regrade", None)
        .await;
    assert_eq!(run["regrade"]["changed_ids"], json!([GOLD]), "{run}");
    assert_eq!(run["report"]["resolved_ids"], json!([GOLD]), "{run}");
}
