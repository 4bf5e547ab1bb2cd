//! Test-output parsers: one log in, a [`StatusMap`] out.

mod django;
mod javascript;
pub mod junit;
mod native;
mod pytest;
mod sympy;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rules::GradingRules;
use crate::status::StatusMap;

/// A test-output format, named as Kiln's API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Parser {
    /// `parse_log_pytest`: the `-rA` short summary.
    Pytest,
    /// `parse_log_pytest_options`: pytest with absolute paths in ids reduced.
    PytestOptions,
    /// `parse_log_pytest_v2`: `-rA` and `-v` forms, ANSI colour stripped.
    PytestV2,
    /// `parse_log_matplotlib`: pytest with `MouseButton` reprs normalised.
    Matplotlib,
    /// `parse_log_seaborn`.
    Seaborn,
    /// `parse_log_django`.
    Django,
    /// `parse_log_sympy`.
    Sympy,
    /// `unittest -v`: the Django parser, as SWE-bench uses it for unittest output.
    Unittest,
    /// `parse_log_cargo`.
    Cargo,
    /// `parse_log_gotest`.
    Go,
    /// `parse_log_jest`.
    Jest,
    /// `parse_log_vitest`.
    Vitest,
    /// Mocha's spec reporter (`parse_log_highlightjs`).
    Mocha,
    /// `parse_log_tap`.
    Tap,
    /// JUnit XML (codeset-gym's reading, as a status map).
    Junit,
}

impl Parser {
    pub const ALL: [Parser; 15] = [
        Self::Pytest,
        Self::PytestOptions,
        Self::PytestV2,
        Self::Matplotlib,
        Self::Seaborn,
        Self::Django,
        Self::Sympy,
        Self::Unittest,
        Self::Cargo,
        Self::Go,
        Self::Jest,
        Self::Vitest,
        Self::Mocha,
        Self::Tap,
        Self::Junit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Pytest => "pytest",
            Self::PytestOptions => "pytest_options",
            Self::PytestV2 => "pytest_v2",
            Self::Matplotlib => "matplotlib",
            Self::Seaborn => "seaborn",
            Self::Django => "django",
            Self::Sympy => "sympy",
            Self::Unittest => "unittest",
            Self::Cargo => "cargo",
            Self::Go => "go",
            Self::Jest => "jest",
            Self::Vitest => "vitest",
            Self::Mocha => "mocha",
            Self::Tap => "tap",
            Self::Junit => "junit",
        }
    }

    /// The SWE-bench `PARSER_REGISTRY` key whose function this parser ports, if any.
    pub fn swebench_function(self) -> Option<&'static str> {
        Some(match self {
            Self::Pytest => "parse_log_pytest",
            Self::PytestOptions => "parse_log_pytest_options",
            Self::PytestV2 => "parse_log_pytest_v2",
            Self::Matplotlib => "parse_log_matplotlib",
            Self::Seaborn => "parse_log_seaborn",
            Self::Django | Self::Unittest => "parse_log_django",
            Self::Sympy => "parse_log_sympy",
            Self::Cargo => "parse_log_cargo",
            Self::Go => "parse_log_gotest",
            Self::Jest => "parse_log_jest",
            Self::Vitest => "parse_log_vitest",
            Self::Mocha => "parse_log_highlightjs",
            Self::Tap => "parse_log_tap",
            Self::Junit => return None,
        })
    }

    /// Resolves a `log_parser` value from a SWE-bench 5.x dataset row (a
    /// `PARSER_REGISTRY` key), including the per-repo aliases of the ported functions.
    pub fn from_swebench_function(name: &str) -> Option<Self> {
        Some(match name {
            "parse_log_pytest"
            | "parse_log_astroid"
            | "parse_log_flask"
            | "parse_log_marshmallow"
            | "parse_log_pvlib"
            | "parse_log_pyvista"
            | "parse_log_sqlfluff"
            | "parse_log_xarray" => Self::Pytest,
            "parse_log_pytest_options"
            | "parse_log_pydicom"
            | "parse_log_requests"
            | "parse_log_pylint" => Self::PytestOptions,
            "parse_log_pytest_v2"
            | "parse_log_astropy"
            | "parse_log_scikit"
            | "parse_log_sphinx" => Self::PytestV2,
            "parse_log_matplotlib" => Self::Matplotlib,
            "parse_log_seaborn" => Self::Seaborn,
            "parse_log_django" => Self::Django,
            "parse_log_sympy" => Self::Sympy,
            "parse_log_cargo" => Self::Cargo,
            "parse_log_gotest" => Self::Go,
            "parse_log_jest" => Self::Jest,
            "parse_log_vitest" => Self::Vitest,
            "parse_log_highlightjs" => Self::Mocha,
            "parse_log_tap" => Self::Tap,
            _ => return None,
        })
    }
}

impl fmt::Display for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown parser {0:?}")]
pub struct UnknownParser(pub String);

impl FromStr for Parser {
    type Err = UnknownParser;

    /// Accepts Kiln names (`pytest`, `go`, …) and SWE-bench registry keys
    /// (`parse_log_astropy`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .or_else(|| Self::from_swebench_function(s))
            .ok_or_else(|| UnknownParser(s.to_owned()))
    }
}

impl Serialize for Parser {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Parser {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a log could not be turned into a status map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The reference parser raises on this input (so the reference run errors and the
    /// instance is not resolved); we report it instead of guessing.
    #[error("the reference parser raises on line {line:?}: {reason}")]
    ReferenceRaises { line: String, reason: &'static str },
    #[error("invalid JUnit XML: {0}")]
    InvalidXml(String),
    #[error("a JUnit <testcase> has neither classname nor name")]
    JunitCaseWithoutName,
}

/// Parses a test log (or, for [`Parser::Junit`], an XML report) the way the reference
/// parser of `rules` does.
pub fn parse(parser: Parser, log: &str, rules: GradingRules) -> Result<StatusMap, ParseError> {
    Ok(match parser {
        Parser::Pytest => pytest::parse_pytest(log, rules),
        Parser::PytestOptions => pytest::parse_pytest_options(log, rules),
        Parser::PytestV2 => pytest::parse_pytest_v2(log, rules),
        Parser::Matplotlib => pytest::parse_matplotlib(log, rules),
        Parser::Seaborn => pytest::parse_seaborn(log, rules)?,
        Parser::Django | Parser::Unittest => django::parse_django(log)?,
        Parser::Sympy => sympy::parse_sympy(log),
        Parser::Cargo => native::parse_cargo(log),
        Parser::Go => native::parse_go(log),
        Parser::Jest => javascript::parse_jest(log, rules),
        Parser::Vitest => javascript::parse_vitest(log),
        Parser::Mocha => javascript::parse_mocha(log),
        Parser::Tap => javascript::parse_tap(log),
        Parser::Junit => junit::parse_junit(log)?,
    })
}
