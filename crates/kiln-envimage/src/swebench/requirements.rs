//! `packages = "requirements.txt"`: the harness's `get_requirements`, reading the file from
//! the record's repository (a bundle) at its environment setup commit instead of from
//! GitHub.

use std::path::Path;

use kiln_git::{Git, GitError};

use crate::error::{EnvImageError, Result};

/// The harness drops these lines (the repository itself is installed later, by `install`).
fn excluded(line: &str) -> bool {
    let line = line.trim();
    ["-e .", "#", ".[test"].iter().any(|p| line.starts_with(p))
}

/// Packages yanked from PyPI since the records were made, as the harness replaces them.
const REPLACEMENTS: [(&str, &str); 1] = [("types-pkg_resources", "types-setuptools")];

/// The file at `path` in `commit`, or `None` when it does not exist there.
fn show(repo: &Path, commit: &str, path: &str) -> Result<Option<String>> {
    let shown = Git::new()
        .arg("-C")
        .arg(repo)
        .args(["show", &format!("{commit}:{path}")])
        .output();
    match shown {
        Ok(out) => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
        // The path is not in that commit (or the commit is not in the repository).
        Err(GitError::Failed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The requirements text the harness would install: the first of `paths` found at
/// `commit` in `repo` (a git directory), its `-r` includes inlined first, excluded lines
/// dropped, yanked packages replaced.
pub(crate) fn requirements_text(repo: &Path, commit: &str, paths: &[String]) -> Result<String> {
    for path in paths {
        let Some(text) = show(repo, commit, path)? else {
            continue;
        };
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let mut original = Vec::new();
        let mut included = Vec::new();
        for line in text.split('\n') {
            if let Some(file) = line.trim().strip_prefix("-r") {
                let file = file.trim();
                let nested = if dir.is_empty() {
                    file.to_owned()
                } else {
                    format!("{dir}/{file}")
                };
                if let Some(nested) = show(repo, commit, &nested)? {
                    included.extend(
                        nested
                            .split('\n')
                            .filter(|l| !excluded(l))
                            .map(str::to_owned),
                    );
                }
            } else if !excluded(line) {
                original.push(line.to_owned());
            }
        }
        included.push(original.join("\n"));
        return Ok(clean(&included.join("\n")));
    }
    Err(EnvImageError::invalid(
        "requirements",
        format!("none of {paths:?} exists at {commit} in {}", repo.display()),
    ))
}

fn clean(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            for (old, new) in REPLACEMENTS {
                if let Some(rest) = line.strip_prefix(old) {
                    // The whole requirement goes: the old package's versions mean nothing
                    // for the new one.
                    if rest.is_empty() || rest.starts_with(['<', '>', '=', '!', '~']) {
                        return new.to_owned();
                    }
                }
            }
            line.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn inlines_includes_drops_excluded_lines_and_replaces_yanked_packages() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q"]);
        std::fs::create_dir(repo.join("requirements")).unwrap();
        std::fs::write(
            repo.join("requirements/dev.txt"),
            "# top\n-r tests.txt\n-e .\npre-commit==3.0\n",
        )
        .unwrap();
        std::fs::write(
            repo.join("requirements/tests.txt"),
            "# comment\npytest==7.2\ntypes-pkg_resources==0.1\n",
        )
        .unwrap();
        git(repo, &["add", "."]);
        git(repo, &["commit", "-q", "-m", "x"]);
        let head = git(repo, &["rev-parse", "HEAD"]);
        let paths = ["nope.txt".to_owned(), "requirements/dev.txt".to_owned()];
        let text = requirements_text(repo, &head, &paths).unwrap();
        assert_eq!(
            text, "pytest==7.2\ntypes-setuptools\n\npre-commit==3.0\n",
            "{text:?}"
        );
        assert!(requirements_text(repo, &head, &["x.txt".to_owned()]).is_err());
    }
}
