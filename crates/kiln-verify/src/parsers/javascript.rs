//! Ports of SWE-bench's JavaScript parsers: `parse_log_jest` (`--verbose`),
//! `parse_log_vitest` (`--reporter=verbose`), `parse_log_tap` and the mocha spec-reporter
//! parser SWE-bench ships as `parse_log_highlightjs`.

use std::sync::LazyLock;

use regex::Regex;

use crate::python_str::{python_regex, strip};
use crate::rules::GradingRules;
use crate::status::{StatusMap, TestStatus};

static JEST_LINE: LazyLock<Regex> =
    LazyLock::new(|| python_regex(r"^{s}*(✓|✕|○){s}(.+?)(?:{s}\((\d+{s}*m?s)\))?$"));

/// Names are the title only (no describe path), so equal titles collide; later wins.
pub(crate) fn parse_jest(log: &str, rules: GradingRules) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let Some(caps) = JEST_LINE.captures(strip(raw)) else {
            continue;
        };
        let captured = caps.get(2).map_or("", |m| m.as_str());
        // 4.x kept the whitespace before a two-space duration; 5.x strips it.
        let name = match rules {
            GradingRules::Swebench5 => strip(captured),
            GradingRules::Swebench4 => captured,
        };
        let status = match caps.get(1).map_or("", |m| m.as_str()) {
            "✓" => TestStatus::Passed,
            "✕" => TestStatus::Failed,
            _ => TestStatus::Skipped,
        };
        map.insert(name, status);
    }
    map
}

static VITEST_LINE: LazyLock<Regex> =
    LazyLock::new(|| python_regex(r"^{s}*(✓|×|↓){s}(.+?)(?:{s}(\d+{s}*m?s?|\[skipped\]))?$"));

pub(crate) fn parse_vitest(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let Some(caps) = VITEST_LINE.captures(strip(raw)) else {
            continue;
        };
        let name = caps.get(2).map_or("", |m| m.as_str());
        let status = match caps.get(1).map_or("", |m| m.as_str()) {
            "✓" => TestStatus::Passed,
            "×" => TestStatus::Failed,
            _ => TestStatus::Skipped,
        };
        map.insert(name, status);
    }
    map
}

static TAP_LINE: LazyLock<Regex> = LazyLock::new(|| python_regex(r"^(ok|not ok) (\d+) (.+)$"));

/// Every `ok N …`/`not ok N …` line at any indentation (subtests included, since lines
/// are stripped) is a test named by *everything* after the number: node's reporter
/// writes `ok 1 - title`, so the name is `- title`, and a `# SKIP`/`# TODO` directive
/// stays in the name and counts as PASSED. Subtests are not prefixed with their parent.
pub(crate) fn parse_tap(log: &str) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let Some(caps) = TAP_LINE.captures(strip(raw)) else {
            continue;
        };
        let name = caps.get(3).map_or("", |m| m.as_str());
        let status = if caps.get(1).map_or("", |m| m.as_str()) == "ok" {
            TestStatus::Passed
        } else {
            TestStatus::Failed
        };
        map.insert(name, status);
    }
    map
}

static MOCHA_EPILOGUE: LazyLock<Regex> = LazyLock::new(|| python_regex(r"\n[ \t]*\d+ passing"));
static MOCHA_TIMING: LazyLock<Regex> = LazyLock::new(|| python_regex(r"\(\d+ms\)"));
static MOCHA_FAILURE: LazyLock<Regex> = LazyLock::new(|| python_regex(r"^\d+\)"));

fn without_timing(name: &str) -> String {
    strip(&MOCHA_TIMING.replace_all(name, "")).to_owned()
}

/// Mocha's spec reporter. Faithful to the reference's quirk: the "suite" is only the
/// most recent indented non-test line (nesting is not tracked, and pending `- title`
/// lines become the suite), joined to the title with `.`.
pub(crate) fn parse_mocha(log: &str) -> StatusMap {
    let body = MOCHA_EPILOGUE.split(log).next().unwrap_or_default();
    let mut map = StatusMap::new();
    let mut suite: Option<String> = None;
    let full_name = |suite: &Option<String>, title: String| match suite {
        Some(s) => format!("{s}.{title}"),
        None => title,
    };
    for line in body.split('\n') {
        let stripped = strip(line);
        if stripped.starts_with('✓') || stripped.starts_with('✔') {
            let check = if stripped.starts_with('✓') {
                '✓'
            } else {
                '✔'
            };
            let title = line.split_once(check).map_or("", |(_, rest)| rest);
            map.insert(full_name(&suite, without_timing(title)), TestStatus::Passed);
        } else if MOCHA_FAILURE.is_match(stripped) {
            let title = line.split_once(')').map_or("", |(_, rest)| rest);
            map.insert(full_name(&suite, without_timing(title)), TestStatus::Failed);
        } else if line.starts_with("  ") {
            suite = Some(stripped.to_owned());
        }
    }
    map
}
