//! Which reference behaviour grades a result.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The SWE-bench harness version whose parsers and grading we reproduce.
///
/// 5.x is the default. The versions differ in parsers (5.x drops pytest's
/// `SKIPPED [N] file:line` summary lines, `pytest_v2` keeps names with spaces, jest
/// names are stripped), in log validity (5.x rejects empty runs and forged output), and
/// in grading (5.x prefix-matches truncated ids, counts a skipped FAIL_TO_PASS test as a
/// failure and a skipped PASS_TO_PASS test as maintained; 4.x counts neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GradingRules {
    #[default]
    #[serde(rename = "swebench5")]
    Swebench5,
    #[serde(rename = "swebench4")]
    Swebench4,
}

impl GradingRules {
    /// The exact reference release these rules were ported from and parity-tested against.
    pub fn reference(self) -> &'static str {
        match self {
            Self::Swebench5 => "swebench==5.0.2",
            Self::Swebench4 => "swebench==4.1.0",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Swebench5 => "swebench5",
            Self::Swebench4 => "swebench4",
        }
    }
}

impl fmt::Display for GradingRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown grading rules {0:?} (expected swebench5 or swebench4)")]
pub struct UnknownRules(pub String);

impl FromStr for GradingRules {
    type Err = UnknownRules;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "swebench5" | "swebench-5" | "5" => Ok(Self::Swebench5),
            "swebench4" | "swebench-4" | "4" => Ok(Self::Swebench4),
            other => Err(UnknownRules(other.to_owned())),
        }
    }
}

/// SWE-bench's `EvalType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalType {
    /// A test succeeds when it passes (or xfails) and fails when it fails, errors or is
    /// missing.
    #[default]
    PassAndFail,
    /// A test fails only when present and exactly FAILED; used for JS suites whose
    /// parsers record failures only.
    FailOnly,
}

impl EvalType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PassAndFail => "pass_and_fail",
            Self::FailOnly => "fail_only",
        }
    }
}

impl fmt::Display for EvalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown eval type {0:?} (expected pass_and_fail or fail_only)")]
pub struct UnknownEvalType(pub String);

impl FromStr for EvalType {
    type Err = UnknownEvalType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pass_and_fail" => Ok(Self::PassAndFail),
            "fail_only" => Ok(Self::FailOnly),
            other => Err(UnknownEvalType(other.to_owned())),
        }
    }
}
