//! JUnit XML, read the way codeset-gym reads it (through `junitparser==3.2.0`).
//!
//! junitparser semantics reproduced here:
//! - a `<testsuites>` root yields its direct `<testsuite>` children; a `<testsuite>`
//!   yields its direct `<testcase>` children, then those of nested suites, recursively;
//!   `<testcase>` elements directly under `<testsuites>` are never seen;
//! - a case's results are *all* `<failure>`, `<error>` and `<skipped>` descendants; it
//!   is skipped if any is `<skipped>`, else failed if it has any result, else passed;
//! - the name is `classname::name`, or whichever of the two is non-empty.
//!
//! Tag names are compared as written (`ns:testcase` is not `testcase`, as in
//! ElementTree); a default `xmlns` on the root is ignored here, whereas ElementTree would
//! rename every tag — no JUnit producer we know of emits one.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::{Deserialize, Serialize};

use super::ParseError;
use crate::status::{StatusMap, TestStatus};

/// What one `<testcase>` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JunitOutcome {
    Passed,
    Failed,
    Error,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JunitCase {
    /// `classname::name`.
    pub name: String,
    pub outcome: JunitOutcome,
}

/// The root of one JUnit XML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JunitDocument {
    /// `true` for a `<testsuites>` root, `false` for a `<testsuite>` root.
    pub multi_suite_root: bool,
    /// Cases in junitparser's iteration order.
    pub cases: Vec<JunitCase>,
    /// What `len()` of the junitparser object is: direct suites of a `<testsuites>`
    /// root, or all cases of a `<testsuite>` root. codeset-gym treats 0 as "no report".
    pub junitparser_len: usize,
}

#[derive(Debug, Default)]
struct Element {
    tag: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, key: &str) -> &str {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    fn children_tagged<'a>(&'a self, tag: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.tag == tag)
    }

    fn descendants<'a>(&'a self, out: &mut Vec<&'a str>) {
        for child in &self.children {
            out.push(child.tag.as_str());
            child.descendants(out);
        }
    }
}

/// XML attribute-value normalisation (what expat does before the value reaches
/// Python): literal line breaks and tabs become spaces; character references survive.
fn attribute_value(raw: &[u8]) -> Result<String, ParseError> {
    let text = std::str::from_utf8(raw).map_err(|e| ParseError::InvalidXml(e.to_string()))?;
    let normalised = text.replace("\r\n", " ").replace(['\r', '\n', '\t'], " ");
    quick_xml::escape::unescape(&normalised)
        .map(|v| v.into_owned())
        .map_err(|e| ParseError::InvalidXml(e.to_string()))
}

fn element_from(start: &BytesStart<'_>) -> Result<Element, ParseError> {
    let tag = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| ParseError::InvalidXml(e.to_string()))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        attrs.push((key, attribute_value(&attr.value)?));
    }
    Ok(Element {
        tag,
        attrs,
        children: Vec::new(),
    })
}

fn parse_tree(xml: &str) -> Result<Element, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            ParseError::InvalidXml(format!("at byte {}: {e}", reader.error_position()))
        })?;
        match event {
            Event::Start(start) => stack.push(element_from(&start)?),
            Event::Empty(start) => {
                let element = element_from(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(ParseError::InvalidXml("more than one root".into())),
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| ParseError::InvalidXml("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(ParseError::InvalidXml("more than one root".into())),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::InvalidXml("unclosed element".into()));
    }
    root.ok_or_else(|| ParseError::InvalidXml("no root element".into()))
}

fn case_from(element: &Element) -> Result<JunitCase, ParseError> {
    let classname = element.attr("classname");
    let name = element.attr("name");
    let full = match (classname.is_empty(), name.is_empty()) {
        (false, false) => format!("{classname}::{name}"),
        (false, true) => classname.to_owned(),
        (true, false) => name.to_owned(),
        (true, true) => return Err(ParseError::JunitCaseWithoutName),
    };
    let mut tags = Vec::new();
    element.descendants(&mut tags);
    let outcome = if tags.contains(&"skipped") {
        JunitOutcome::Skipped
    } else if tags.contains(&"failure") {
        JunitOutcome::Failed
    } else if tags.contains(&"error") {
        JunitOutcome::Error
    } else {
        JunitOutcome::Passed
    };
    Ok(JunitCase {
        name: full,
        outcome,
    })
}

fn suite_cases(suite: &Element, out: &mut Vec<JunitCase>) -> Result<(), ParseError> {
    for case in suite.children_tagged("testcase") {
        out.push(case_from(case)?);
    }
    for nested in suite.children_tagged("testsuite") {
        suite_cases(nested, out)?;
    }
    Ok(())
}

/// Parses one JUnit XML document (junitparser's `JUnitXml.fromfile`).
pub fn parse_junit_document(xml: &str) -> Result<JunitDocument, ParseError> {
    let root = parse_tree(xml)?;
    let mut cases = Vec::new();
    match root.tag.as_str() {
        "testsuites" => {
            let mut suites = 0;
            for suite in root.children_tagged("testsuite") {
                suites += 1;
                suite_cases(suite, &mut cases)?;
            }
            Ok(JunitDocument {
                multi_suite_root: true,
                cases,
                junitparser_len: suites,
            })
        }
        "testsuite" => {
            suite_cases(&root, &mut cases)?;
            Ok(JunitDocument {
                multi_suite_root: false,
                junitparser_len: cases.len(),
                cases,
            })
        }
        other => Err(ParseError::InvalidXml(format!(
            "root element is <{other}>, not <testsuites> or <testsuite>"
        ))),
    }
}

/// The status map of a JUnit report: FAILED for `<failure>`, ERROR for `<error>` only,
/// SKIPPED for `<skipped>`; a later case with the same name wins.
pub(crate) fn parse_junit(xml: &str) -> Result<StatusMap, ParseError> {
    let document = parse_junit_document(xml)?;
    Ok(document
        .cases
        .into_iter()
        .map(|case| {
            let status = match case.outcome {
                JunitOutcome::Passed => TestStatus::Passed,
                JunitOutcome::Failed => TestStatus::Failed,
                JunitOutcome::Error => TestStatus::Error,
                JunitOutcome::Skipped => TestStatus::Skipped,
            };
            (case.name, status)
        })
        .collect())
}
