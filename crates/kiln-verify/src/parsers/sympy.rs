//! Port of SWE-bench's `parse_log_sympy` (`bin/test -C --verbose` output).

use std::sync::LazyLock;

use regex::Regex;

use crate::python_str::{python_regex, split_whitespace, strip};
use crate::status::{StatusMap, TestStatus};

/// Failure section headers, `____ sympy/x/tests/test_y.py:test_z ____`; the pattern is
/// loose enough to match other lines too, as in the reference.
static FAILURE_HEADER: LazyLock<Regex> = LazyLock::new(|| python_regex(r"(_*) (.*)\.py:(.*) (_*)"));

pub(crate) fn parse_sympy(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for caps in FAILURE_HEADER.captures_iter(log) {
        let file = caps.get(2).map_or("", |m| m.as_str());
        let test = caps.get(3).map_or("", |m| m.as_str());
        map.insert(format!("{file}.py:{test}"), TestStatus::Failed);
    }
    for raw in log.split('\n') {
        let line = strip(raw);
        if !line.starts_with("test_") {
            continue;
        }
        let first = split_whitespace(line).first().map(|t| (*t).to_owned());
        let Some(first) = first else { continue };
        if line.ends_with(" E") {
            map.insert(first.clone(), TestStatus::Error);
        }
        if line.ends_with(" F") {
            map.insert(first.clone(), TestStatus::Failed);
        }
        if line.ends_with(" ok") {
            map.insert(first, TestStatus::Passed);
        }
    }
    map
}
