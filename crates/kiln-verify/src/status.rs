//! Test statuses and the status map every parser produces.

use std::collections::BTreeMap;
use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// The status of one test, spelled as SWE-bench spells it.
///
/// `Unrecognized` exists because the reference pytest parsers store the first token of
/// any line that merely *starts* with a status word (`PASSED:`, `ERRORS`, …) verbatim.
/// The reference grades such a test as neither passing nor failing, so we must keep the
/// token rather than drop the test (an absent test counts as a failure).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TestStatus {
    #[serde(rename = "PASSED")]
    Passed,
    #[serde(rename = "FAILED")]
    Failed,
    #[serde(rename = "SKIPPED")]
    Skipped,
    #[serde(rename = "ERROR")]
    Error,
    #[serde(rename = "XFAIL")]
    Xfail,
    #[serde(untagged)]
    Unrecognized(String),
}

impl TestStatus {
    /// The five status words, in the order SWE-bench's `TestStatus` enum declares them
    /// (the order matters nowhere, but the set does: it decides which lines parsers read).
    pub const WORDS: [&'static str; 5] = ["FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL"];

    /// Maps a raw token to a status, keeping unknown tokens verbatim.
    pub fn from_token(token: &str) -> Self {
        match token {
            "PASSED" => Self::Passed,
            "FAILED" => Self::Failed,
            "SKIPPED" => Self::Skipped,
            "ERROR" => Self::Error,
            "XFAIL" => Self::Xfail,
            other => Self::Unrecognized(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Passed => "PASSED",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
            Self::Error => "ERROR",
            Self::Xfail => "XFAIL",
            Self::Unrecognized(token) => token,
        }
    }

    /// PASSED and XFAIL grade identically everywhere in the reference.
    pub fn is_passing(&self) -> bool {
        matches!(self, Self::Passed | Self::Xfail)
    }
}

impl fmt::Display for TestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Test name → status, with Python `dict` semantics: a later line for the same name
/// overwrites the status but keeps the name's first position.
///
/// Order is observable in the reference: a truncated expected name that prefix-matches
/// several tests resolves to the *first* match, so a `BTreeMap` would change grades.
/// [`StatusMap::to_btree`] gives the sorted view when order does not matter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusMap(IndexMap<String, TestStatus>);

impl StatusMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, status: TestStatus) {
        self.0.insert(name.into(), status);
    }

    pub fn get(&self, name: &str) -> Option<&TestStatus> {
        self.0.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in first-insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TestStatus)> {
        self.0.iter().map(|(name, status)| (name.as_str(), status))
    }

    pub fn to_btree(&self) -> BTreeMap<String, TestStatus> {
        self.0
            .iter()
            .map(|(name, status)| (name.clone(), status.clone()))
            .collect()
    }
}

impl FromIterator<(String, TestStatus)> for StatusMap {
    fn from_iter<I: IntoIterator<Item = (String, TestStatus)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (name, status) in iter {
            map.insert(name, status);
        }
        map
    }
}
