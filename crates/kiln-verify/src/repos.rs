//! What SWE-bench knows per repository: its parser (`MAP_REPO_TO_PARSER_*`), its
//! evaluation type (`FAIL_ONLY_REPOS`) and, for the Python repos, its test command
//! (`MAP_REPO_VERSION_TO_SPECS` of 4.1.0; 5.x datasets carry their eval script instead).

use std::sync::LazyLock;

use regex::Regex;

use crate::parsers::Parser;
use crate::python_str::python_regex;
use crate::rules::{EvalType, GradingRules};

/// The parser SWE-bench uses for a repository, for the repositories whose parser Kiln
/// ports. `None` for unknown repositories and for those with bespoke parsers (calypso,
/// Chart.js, karma-based suites, Java, PHP, Ruby, C, …).
pub fn parser_for_repo(repo: &str) -> Option<Parser> {
    Some(match repo {
        "astropy/astropy" | "scikit-learn/scikit-learn" | "sphinx-doc/sphinx" => Parser::PytestV2,
        "django/django" => Parser::Django,
        "marshmallow-code/marshmallow"
        | "pallets/flask"
        | "pvlib/pvlib-python"
        | "pydata/xarray"
        | "pylint-dev/astroid"
        | "pytest-dev/pytest"
        | "pyvista/pyvista"
        | "sqlfluff/sqlfluff" => Parser::Pytest,
        "psf/requests" | "pydicom/pydicom" | "pylint-dev/pylint" => Parser::PytestOptions,
        "matplotlib/matplotlib" => Parser::Matplotlib,
        "mwaskom/seaborn" => Parser::Seaborn,
        "sympy/sympy" => Parser::Sympy,
        "caddyserver/caddy"
        | "hashicorp/terraform"
        | "prometheus/prometheus"
        | "gohugoio/hugo"
        | "gin-gonic/gin" => Parser::Go,
        "burntsushi/ripgrep" | "sharkdp/bat" | "astral-sh/ruff" | "tokio-rs/tokio"
        | "uutils/coreutils" | "nushell/nushell" | "tokio-rs/axum" => Parser::Cargo,
        "babel/babel" | "facebook/docusaurus" => Parser::Jest,
        "vuejs/core" => Parser::Vitest,
        "mrdoob/three.js" | "axios/axios" => Parser::Tap,
        "highlightjs/highlight.js" => Parser::Mocha,
        _ => return None,
    })
}

/// `FAIL_ONLY_REPOS` of the given rules (5.x added bpmn-js, openlayers and eslint).
pub fn eval_type_for_repo(repo: &str, rules: GradingRules) -> EvalType {
    let fail_only = match rules {
        GradingRules::Swebench5 => [
            "chartjs/Chart.js",
            "processing/p5.js",
            "markedjs/marked",
            "bpmn-io/bpmn-js",
            "openlayers/openlayers",
            "eslint/eslint",
        ]
        .contains(&repo),
        GradingRules::Swebench4 => {
            ["chartjs/Chart.js", "processing/p5.js", "markedjs/marked"].contains(&repo)
        }
    };
    if fail_only {
        EvalType::FailOnly
    } else {
        EvalType::PassAndFail
    }
}

/// The base test command SWE-bench runs for a Python repository at a version (without
/// the test directives, see [`test_directives`]).
pub fn python_test_command(repo: &str, version: &str) -> Option<&'static str> {
    PYTHON_TEST_COMMANDS
        .iter()
        .find(|(r, versions, _)| *r == repo && versions.contains(&version))
        .map(|(_, _, cmd)| *cmd)
}

/// The full test command: base command plus directives, space-separated.
pub fn python_test_command_for_patch(
    repo: &str,
    version: &str,
    test_patch: &str,
) -> Option<String> {
    let base = python_test_command(repo, version)?;
    let mut parts = vec![base.to_owned()];
    parts.extend(test_directives(repo, test_patch));
    Some(parts.join(" "))
}

const NON_TEST_EXTS: [&str; 11] = [
    ".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml",
];

static DIFF_TARGET: LazyLock<Regex> = LazyLock::new(|| python_regex(r"diff --git a/.* b/(.*)"));

/// `get_test_directives`: the files the test patch touches, minus non-test files; for
/// Django, dotted module names relative to `tests/`.
pub fn test_directives(repo: &str, test_patch: &str) -> Vec<String> {
    if repo == "swe-bench/humaneval" {
        return vec!["test.py".to_owned()];
    }
    let files = DIFF_TARGET
        .captures_iter(test_patch)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .filter(|d| !NON_TEST_EXTS.iter().any(|ext| d.ends_with(ext)));
    if repo != "django/django" {
        return files.map(str::to_owned).collect();
    }
    files
        .map(|d| {
            let d = d.strip_suffix(".py").unwrap_or(d);
            let d = d.strip_prefix("tests/").unwrap_or(d);
            d.replace('/', ".")
        })
        .collect()
}

/// `test_cmd` of `MAP_REPO_VERSION_TO_SPECS` (swebench 4.1.0, Python repos), generated:
/// (repo, versions, command). A list-valued `test_cmd` keeps its last entry, as grading does.
pub(crate) const PYTHON_TEST_COMMANDS: &[(&str, &[&str], &str)] = &[
    (
        "astropy/astropy",
        &[
            "3.0", "3.1", "3.2", "4.1", "4.2", "4.3", "5.0", "5.1", "5.2", "v5.3",
        ],
        "pytest -rA",
    ),
    (
        "astropy/astropy",
        &["0.1", "0.2", "0.3", "0.4", "1.1", "1.2", "1.3"],
        "pytest -rA -vv -o console_output_style=classic --tb=no",
    ),
    (
        "django/django",
        &[
            "1.7", "1.8", "1.10", "1.11", "2.0", "2.1", "2.2", "1.4", "1.5", "1.6", "3.0", "3.1",
            "3.2", "4.0", "4.1", "4.2", "5.0", "5.1", "5.2",
        ],
        "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
    ),
    (
        "django/django",
        &["1.9"],
        "./tests/runtests.py --verbosity 2",
    ),
    (
        "matplotlib/matplotlib",
        &[
            "3.5", "3.6", "3.7", "3.8", "3.9", "3.1", "3.2", "3.3", "3.4", "3.0", "2.0", "2.1",
            "2.2", "1.0", "1.1", "1.2", "1.3", "1.4", "1.5",
        ],
        "pytest -rA",
    ),
    (
        "marshmallow-code/marshmallow",
        &[
            "2.18", "2.19", "2.20", "3.0", "3.1", "3.10", "3.11", "3.12", "3.13", "3.15", "3.16",
            "3.19", "3.2", "3.4", "3.8", "3.9",
        ],
        "pytest -rA",
    ),
    (
        "mwaskom/seaborn",
        &["0.11", "0.12", "0.13", "0.14"],
        "pytest --no-header -rA",
    ),
    (
        "pallets/flask",
        &["2.0", "2.1", "2.2", "2.3", "3.0", "3.1"],
        "pytest -rA",
    ),
    (
        "psf/requests",
        &[
            "0.7", "0.8", "0.9", "0.11", "0.13", "0.14", "1.1", "1.2", "2.0", "2.2", "2.3", "2.4",
            "2.5", "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.17", "2.18", "2.19", "2.22",
            "2.26", "2.25", "2.27", "2.31", "3.0",
        ],
        "pytest -rA",
    ),
    (
        "pvlib/pvlib-python",
        &[
            "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9",
        ],
        "pytest -rA",
    ),
    (
        "pydata/xarray",
        &[
            "0.12", "0.18", "0.19", "0.20", "2022.03", "2022.06", "2022.09", "2023.07", "2024.05",
        ],
        "pytest -rA",
    ),
    (
        "pydicom/pydicom",
        &[
            "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "3.0",
        ],
        "pytest -rA",
    ),
    (
        "pylint-dev/astroid",
        &[
            "2.10", "2.12", "2.13", "2.14", "2.15", "2.16", "2.5", "2.6", "2.7", "2.8", "2.9",
            "3.0",
        ],
        "pytest -rA",
    ),
    (
        "pylint-dev/pylint",
        &[
            "2.10", "2.11", "2.13", "2.14", "2.15", "2.16", "2.17", "2.8", "2.9", "3.0", "3.1",
            "3.2", "3.3", "4.0",
        ],
        "pytest -rA",
    ),
    (
        "pytest-dev/pytest",
        &[
            "4.4", "4.5", "4.6", "5.0", "5.1", "5.2", "5.3", "5.4", "6.0", "6.2", "6.3", "7.0",
            "7.1", "7.2", "7.4", "8.0", "8.1", "8.2", "8.3", "8.4",
        ],
        "pytest -rA",
    ),
    (
        "pyvista/pyvista",
        &[
            "0.20", "0.21", "0.22", "0.23", "0.24", "0.25", "0.26", "0.27", "0.28", "0.29", "0.30",
            "0.31", "0.32", "0.33", "0.34", "0.35", "0.36", "0.37", "0.38", "0.39", "0.40", "0.41",
            "0.42", "0.43",
        ],
        "pytest -rA",
    ),
    (
        "scikit-learn/scikit-learn",
        &["0.20", "0.21", "0.22", "1.3", "1.4", "1.5", "1.6"],
        "pytest -rA",
    ),
    (
        "sphinx-doc/sphinx",
        &[
            "1.5", "1.6", "1.7", "1.8", "2.0", "2.1", "2.2", "2.3", "2.4", "3.0", "3.1", "3.2",
            "3.3", "3.4", "3.5", "4.0", "4.1", "4.2", "4.3", "4.4", "4.5", "5.0", "5.1", "5.2",
            "5.3", "6.0", "6.2", "7.0", "7.1", "7.2", "7.3", "7.4", "8.0", "8.1",
        ],
        "tox --current-env -epy39 -v --",
    ),
    (
        "sqlfluff/sqlfluff",
        &[
            "0.10", "0.11", "0.12", "0.13", "0.4", "0.5", "0.6", "0.8", "0.9", "1.0", "1.1", "1.2",
            "1.3", "1.4", "2.0", "2.1", "2.2",
        ],
        "pytest -rA",
    ),
    ("swe-bench/humaneval", &["1.0"], "python"),
    (
        "sympy/sympy",
        &[
            "0.7", "1.0", "1.1", "1.10", "1.11", "1.12", "1.2", "1.4", "1.5", "1.6", "1.7", "1.8",
            "1.9", "1.13", "1.14",
        ],
        "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose",
    ),
];
