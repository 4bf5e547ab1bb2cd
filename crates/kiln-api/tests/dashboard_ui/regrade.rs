//! A finished evaluation run's page: its Re-grade button calls the API and the page says
//! what it did. The browser test's sample is a busybox image (no git, no GNU patch), so
//! the prediction does not apply: the instance has no test log, and nothing is re-graded.
use serde_json::json;

use crate::browser::Browser;
use crate::sandbox::{DATASET, SAMPLE};

/// Starts a one-instance run as the signed-in person, waits for it to end, then
/// re-grades it from its page.
pub async fn regrade_button(b: &Browser, root: &str) {
    let predictions = json!([{"instance_id": SAMPLE, "model_name_or_path": "m",
        "model_patch": "diff --git a/x b/x\n"}]);
    let body = json!({"dataset": DATASET, "predictions": predictions, "run_id": "ui-run"});
    // From the page itself: its sign-in cookie and CSRF token.
    let (status, run) = b.api("POST", "/v1/parallel/runs", Some(body), true).await;
    assert_eq!(status, 201, "{run}");
    b.goto(&format!("{root}/#/run/ui-run")).await;
    // The page reloads itself when the run ends.
    b.text_of("#run-status", "completed").await;
    b.click("#run-regrade").await;
    b.text_of(
        "#run-regrade-outcome",
        "Re-graded 0 instances · 0 verdicts changed",
    )
    .await;
    b.screenshot("12a-run-regraded").await;
}
