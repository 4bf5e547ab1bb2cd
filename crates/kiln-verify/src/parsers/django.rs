//! Port of SWE-bench's `parse_log_django`, which also serves plain `unittest -v`
//! output (`test_x (mod.Class) ... ok`, `FAIL: test_x (mod.Class)`).
//!
//! Names are everything before `" ... "`, so a test with a docstring is named by its
//! docstring's first line, exactly as the datasets list it.

use std::sync::LazyLock;

use regex::Regex;

use super::ParseError;
use crate::python_str::{before_first, lstrip, python_regex, split_whitespace, strip};
use crate::status::{StatusMap, TestStatus};

const PASS_SUFFIXES: [&str; 3] = [" ... ok", " ... OK", " ...  OK"];

/// Django's runner sometimes prints a long message between `...` and `ok`; the
/// reference recovers those three known shapes from the whole log.
static INTERRUPTED_PASSES: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        python_regex(
            r"(?m)^(.*?){s}\.\.\.{s}Testing against Django installed in ((?s:.*?)) silenced\)\.\nok$",
        ),
        python_regex(r"(?m)^(.*?){s}\.\.\.{s}Internal Server Error: /(.*)/\nok$"),
        python_regex(
            r"(?m)^(.*?){s}\.\.\.{s}System check identified no issues \(0 silenced\)\nok$",
        ),
    ]
});

fn second_token(line: &str) -> Result<String, ParseError> {
    split_whitespace(line)
        .get(1)
        .map(|t| (*t).to_owned())
        .ok_or_else(|| ParseError::ReferenceRaises {
            line: line.to_owned(),
            reason: "IndexError: FAIL:/ERROR: line without a test name",
        })
}

pub(crate) fn parse_django(log: &str) -> Result<StatusMap, ParseError> {
    let mut map = StatusMap::new();
    let mut prev_test: Option<String> = None;
    for raw in log.split('\n') {
        let mut line = strip(raw).to_owned();

        if line.contains("--version is equivalent to version") {
            map.insert("--version is equivalent to version", TestStatus::Passed);
        }
        if line.contains(" ... ") {
            prev_test = Some(before_first(&line, " ... ").to_owned());
        }
        for suffix in PASS_SUFFIXES {
            if line.ends_with(suffix) {
                // django__django-7188 prints a migration line and the test on one line.
                if line.starts_with("Applying sites.0002_alter_domain_unique...test_no_migrations")
                {
                    let rest = line.split_once("...").map_or(line.as_str(), |(_, r)| r);
                    line = strip(rest).to_owned();
                }
                let test = line.rsplit_once(suffix).map_or(line.as_str(), |(h, _)| h);
                map.insert(test, TestStatus::Passed);
                break;
            }
        }
        if line.contains(" ... skipped") {
            map.insert(before_first(&line, " ... skipped"), TestStatus::Skipped);
        }
        if line.ends_with(" ... FAIL") {
            map.insert(before_first(&line, " ... FAIL"), TestStatus::Failed);
        }
        if line.starts_with("FAIL:") {
            map.insert(second_token(&line)?, TestStatus::Failed);
        }
        if line.ends_with(" ... ERROR") {
            map.insert(before_first(&line, " ... ERROR"), TestStatus::Error);
        }
        if line.starts_with("ERROR:") {
            map.insert(second_token(&line)?, TestStatus::Error);
        }
        if lstrip(&line).starts_with("ok") {
            if let Some(test) = &prev_test {
                map.insert(test.clone(), TestStatus::Passed);
            }
        }
    }
    for pattern in INTERRUPTED_PASSES.iter() {
        for caps in pattern.captures_iter(log) {
            if let Some(name) = caps.get(1) {
                map.insert(name.as_str(), TestStatus::Passed);
            }
        }
    }
    Ok(map)
}
