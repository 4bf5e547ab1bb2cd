//! Ports of SWE-bench's pytest parsers: `parse_log_pytest` (and its matplotlib and
//! seaborn variants), `parse_log_pytest_options` and `parse_log_pytest_v2`.
//!
//! They read pytest's `-rA` short summary (`PASSED path::test[id]`); `pytest_v2` also
//! reads the `-v` form (`path::test PASSED`). Names are cut at the first whitespace
//! (except in 5.x `pytest_v2`), FAILED lines lose `" - "`, and the status is the first
//! token verbatim — all as the reference does, because the datasets' expected names were
//! produced by these exact rules.

use std::sync::LazyLock;

use regex::Regex;

use super::ParseError;
use crate::python_str::{python_regex, split_whitespace};
use crate::rules::GradingRules;
use crate::status::{StatusMap, TestStatus};

fn starts_with_status(line: &str) -> bool {
    TestStatus::WORDS.iter().any(|w| line.starts_with(w))
}

fn ends_with_status(line: &str) -> bool {
    TestStatus::WORDS.iter().any(|w| line.ends_with(w))
}

static SKIP_SUMMARY_COUNT: LazyLock<Regex> = LazyLock::new(|| python_regex(r"^\[\d+\]$"));

/// 5.x: `SKIPPED [3] tests/x.py:12: reason` is a summary whose `[3]` is not a test.
fn is_skip_summary(rules: GradingRules, status: &str, name: &str) -> bool {
    rules == GradingRules::Swebench5 && status == "SKIPPED" && SKIP_SUMMARY_COUNT.is_match(name)
}

/// The shared loop of `parse_log_pytest` and `parse_log_matplotlib`.
fn short_summary(log: &str, rules: GradingRules, rewrite: impl Fn(&str) -> String) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let mut line = rewrite(raw);
        if !starts_with_status(&line) {
            continue;
        }
        if line.starts_with("FAILED") {
            line = line.replace(" - ", " ");
        }
        let tokens = split_whitespace(&line);
        if tokens.len() <= 1 || is_skip_summary(rules, tokens[0], tokens[1]) {
            continue;
        }
        map.insert(tokens[1], TestStatus::from_token(tokens[0]));
    }
    map
}

pub(crate) fn parse_pytest(log: &str, rules: GradingRules) -> StatusMap {
    short_summary(log, rules, str::to_owned)
}

/// matplotlib's ids contain enum reprs that pytest printed differently across versions.
pub(crate) fn parse_matplotlib(log: &str, rules: GradingRules) -> StatusMap {
    short_summary(log, rules, |line| {
        line.replace("MouseButton.LEFT", "1")
            .replace("MouseButton.RIGHT", "3")
    })
}

static OPTION_PATTERN: LazyLock<Regex> = LazyLock::new(|| python_regex(r"(.*?)\[(.*)\]"));

pub(crate) fn parse_pytest_options(log: &str, rules: GradingRules) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        if !starts_with_status(raw) {
            continue;
        }
        let line = if raw.starts_with("FAILED") {
            raw.replace(" - ", " ")
        } else {
            raw.to_owned()
        };
        let tokens = split_whitespace(&line);
        if tokens.len() <= 1 || is_skip_summary(rules, tokens[0], tokens[1]) {
            continue;
        }
        let name = match OPTION_PATTERN.captures(tokens[1]) {
            Some(caps) => {
                let main = caps.get(1).map_or("", |m| m.as_str());
                let mut option = caps.get(2).map_or("", |m| m.as_str()).to_owned();
                // Absolute paths in ids differ between machines; keep the last segment.
                if option.starts_with('/') && !option.starts_with("//") && !option.contains('*') {
                    let last = option.rsplit('/').next().unwrap_or_default().to_owned();
                    option = format!("/{last}");
                }
                format!("{main}[{option}]")
            }
            None => tokens[1].to_owned(),
        };
        map.insert(name, TestStatus::from_token(tokens[0]));
    }
    map
}

static ANSI_COLOR: LazyLock<Regex> = LazyLock::new(|| python_regex(r"\[(\d+)m"));

pub(crate) fn parse_pytest_v2(log: &str, rules: GradingRules) -> StatusMap {
    let mut map = StatusMap::new();
    for raw in log.split('\n') {
        let uncolored = ANSI_COLOR.replace_all(raw, "");
        // chr(1)..chr(31) are deleted outright (tabs included), so "a\tb" becomes "ab".
        let line: String = uncolored
            .chars()
            .filter(|c| !('\u{1}'..='\u{1f}').contains(c))
            .collect();
        if starts_with_status(&line) {
            match rules {
                GradingRules::Swebench5 => {
                    let kept = if line.starts_with("FAILED") {
                        line.split_once(" - ")
                            .map_or(line.as_str(), |(head, _)| head)
                    } else {
                        line.as_str()
                    };
                    let tokens = split_whitespace(kept);
                    if tokens.len() >= 2 && !is_skip_summary(rules, tokens[0], tokens[1]) {
                        map.insert(tokens[1..].join(" "), TestStatus::from_token(tokens[0]));
                    }
                }
                GradingRules::Swebench4 => {
                    let kept = if line.starts_with("FAILED") {
                        line.replace(" - ", " ")
                    } else {
                        line.clone()
                    };
                    let tokens = split_whitespace(&kept);
                    if tokens.len() >= 2 {
                        map.insert(tokens[1], TestStatus::from_token(tokens[0]));
                    }
                }
            }
        } else if ends_with_status(&line) {
            let tokens = split_whitespace(&line);
            if tokens.len() >= 2 {
                match rules {
                    GradingRules::Swebench5 => {
                        let last = tokens.len() - 1;
                        map.insert(
                            tokens[..last].join(" "),
                            TestStatus::from_token(tokens[last]),
                        );
                    }
                    // 4.x takes the first two tokens, whatever follows.
                    GradingRules::Swebench4 => {
                        map.insert(tokens[0], TestStatus::from_token(tokens[1]));
                    }
                }
            }
        }
    }
    map
}

pub(crate) fn parse_seaborn(log: &str, rules: GradingRules) -> Result<StatusMap, ParseError> {
    let mut map = StatusMap::new();
    for line in log.split('\n') {
        let parts = split_whitespace(line);
        if parts.len() < 2 {
            // 4.x indexes parts[1] unguarded on these lines and raises.
            let would_index = line.starts_with("FAILED")
                || line.contains(" PASSED ")
                || line.starts_with("PASSED");
            if rules == GradingRules::Swebench4 && would_index {
                return Err(ParseError::ReferenceRaises {
                    line: line.to_owned(),
                    reason: "IndexError: seaborn line without a test name",
                });
            }
            continue;
        }
        if line.starts_with("FAILED") {
            map.insert(parts[1], TestStatus::Failed);
        } else if line.contains(" PASSED ") {
            if parts[1] == "PASSED" {
                map.insert(parts[0], TestStatus::Passed);
            }
        } else if line.starts_with("PASSED") {
            map.insert(parts[1], TestStatus::Passed);
        }
    }
    Ok(map)
}
