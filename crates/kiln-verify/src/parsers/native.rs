//! Ports of SWE-bench's `parse_log_cargo` (libtest) and `parse_log_gotest` (`go test -v`).

use std::sync::LazyLock;

use regex::Regex;

use crate::python_str::{python_regex, strip};
use crate::status::{StatusMap, TestStatus};

static CARGO_LINE: LazyLock<Regex> =
    LazyLock::new(|| python_regex(r"^test{s}+({S}+){s}+\.\.\.{s}+({w}+)$"));

/// `test path::name ... ok|FAILED`; `ignored` lines are dropped, as in the reference.
pub(crate) fn parse_cargo(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let Some(caps) = CARGO_LINE.captures(strip(raw)) else {
            continue;
        };
        let name = caps.get(1).map_or("", |m| m.as_str());
        match caps.get(2).map_or("", |m| m.as_str()) {
            "ok" => map.insert(name, TestStatus::Passed),
            "FAILED" => map.insert(name, TestStatus::Failed),
            _ => {}
        }
    }
    map
}

static GO_LINE: LazyLock<Regex> =
    LazyLock::new(|| python_regex(r"^--- (PASS|FAIL|SKIP): (.+) \((.+)\)$"));

/// `--- PASS: TestX/sub (0.00s)`; subtests keep their full slash path.
pub(crate) fn parse_go(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let Some(caps) = GO_LINE.captures(strip(raw)) else {
            continue;
        };
        let name = caps.get(2).map_or("", |m| m.as_str());
        let status = match caps.get(1).map_or("", |m| m.as_str()) {
            "PASS" => TestStatus::Passed,
            "FAIL" => TestStatus::Failed,
            _ => TestStatus::Skipped,
        };
        map.insert(name, status);
    }
    map
}
