//! The SWE-bench harness's install specifications (`MAP_REPO_VERSION_TO_SPECS`), as data.
//!
//! The built-in table (`specs/swebench-python.json`) is the harness's own entries for the
//! Python repositories Kiln's fixture uses, copied from the `swebench` package; a file of the
//! same shape extends or overrides it (`kiln images build-swebench --specs FILE`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{EnvImageError, Result};

const BUILTIN: &str = include_str!("../../specs/swebench-python.json");

/// How the harness installs one version of one repository.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct VersionSpec {
    /// The Python the environment needs, e.g. `3.9`.
    pub python: String,
    /// `requirements.txt` (read from the repository at the record's environment setup
    /// commit), `environment.yml` (not supported), or package names the harness gives conda,
    /// installed here with pip.
    #[serde(default)]
    pub packages: Option<String>,
    #[serde(default)]
    pub pip_packages: Vec<String>,
    /// Run in `/testbed` before `install`, with the environment active.
    #[serde(default)]
    pub pre_install: Vec<String>,
    #[serde(default)]
    pub install: Option<String>,
}

/// The versions of one repository.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RepoSpecs {
    /// Where `packages = "requirements.txt"` finds the file, tried in order.
    #[serde(default)]
    pub requirements_paths: Vec<String>,
    pub versions: BTreeMap<String, VersionSpec>,
}

/// The whole table: repository (`owner/name`) → its versions.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct SpecTable {
    pub repos: BTreeMap<String, RepoSpecs>,
}

impl SpecTable {
    /// The table shipped with Kiln.
    pub fn builtin() -> Result<Self> {
        Self::parse(BUILTIN, "built-in swebench specs")
    }

    /// Parses a table in the shape of `specs/swebench-python.json`.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|source| EnvImageError::Json {
            what: what.to_owned(),
            source,
        })
    }

    /// The built-in table, with the repositories and versions of `file` added or replacing
    /// the built-in ones.
    pub fn builtin_extended_by(file: Option<&Path>) -> Result<Self> {
        let mut table = Self::builtin()?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(EnvImageError::io("read", path))?;
            table.extend(Self::parse(&text, &path.display().to_string())?);
        }
        Ok(table)
    }

    pub fn extend(&mut self, other: SpecTable) {
        for (repo, specs) in other.repos {
            let mine = self.repos.entry(repo).or_default();
            if !specs.requirements_paths.is_empty() {
                mine.requirements_paths = specs.requirements_paths;
            }
            mine.versions.extend(specs.versions);
        }
    }

    /// The spec of `repo` at `version`, or an error naming what is missing.
    pub fn get(&self, repo: &str, version: &str) -> Result<(&RepoSpecs, &VersionSpec)> {
        let specs = self.repos.get(repo).ok_or_else(|| {
            EnvImageError::invalid(
                "swebench spec",
                format!("no spec for repository {repo}; add it with --specs FILE"),
            )
        })?;
        let spec = specs.versions.get(version).ok_or_else(|| {
            EnvImageError::invalid(
                "swebench spec",
                format!("no spec for {repo} version {version:?}; add it with --specs FILE"),
            )
        })?;
        Ok((specs, spec))
    }
}

/// The Debian release whose `python3` is `python` (major.minor): the image then needs no
/// Python of its own. Releases reachable from Debian's main archive only.
pub fn debian_suite_for_python(python: &str) -> Result<&'static str> {
    match python {
        "3.9" => Ok("bullseye"),
        "3.11" => Ok("bookworm"),
        "3.13" => Ok("trixie"),
        other => Err(EnvImageError::invalid(
            "python",
            format!(
                "no Debian release in the main archive ships Python {other} \
                 (3.9: bullseye, 3.11: bookworm, 3.13: trixie)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_has_the_fixture_repositories() {
        let table = SpecTable::builtin().unwrap();
        let (_, flask) = table.get("pallets/flask", "2.3").unwrap();
        assert_eq!(flask.python, "3.11");
        assert_eq!(flask.packages.as_deref(), Some("requirements.txt"));
        let (repo, pytest) = table.get("pytest-dev/pytest", "5.4").unwrap();
        assert!(repo.requirements_paths.is_empty());
        assert_eq!(
            pytest.install.as_deref(),
            Some("python -m pip install -e .")
        );
        assert!(pytest.pip_packages.iter().any(|p| p == "pluggy==0.13.1"));
        let (repo, _) = table.get("pylint-dev/pylint", "2.15").unwrap();
        assert_eq!(repo.requirements_paths, ["requirements_test.txt"]);
        assert!(table.get("pallets/flask", "9.9").is_err());
        assert!(table.get("nobody/nothing", "1.0").is_err());
    }

    #[test]
    fn a_file_extends_and_overrides() {
        let mut table = SpecTable::builtin().unwrap();
        let extra = SpecTable::parse(
            r#"{"repos": {"pallets/flask": {"versions": {"2.3": {"python": "3.13"}}},
                          "me/mine": {"versions": {"1.0": {"python": "3.9"}}}}}"#,
            "test",
        )
        .unwrap();
        table.extend(extra);
        assert_eq!(table.get("pallets/flask", "2.3").unwrap().1.python, "3.13");
        assert_eq!(
            table
                .get("pallets/flask", "2.0")
                .unwrap()
                .0
                .requirements_paths,
            ["requirements/dev.txt"]
        );
        assert!(table.get("me/mine", "1.0").is_ok());
    }

    #[test]
    fn pythons_map_to_debian_releases() {
        assert_eq!(debian_suite_for_python("3.9").unwrap(), "bullseye");
        assert_eq!(debian_suite_for_python("3.11").unwrap(), "bookworm");
        assert!(debian_suite_for_python("3.8").is_err());
    }
}
