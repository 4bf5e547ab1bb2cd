//! Imports whose repositories are bad (issue 14): a corrupt repository is refused with a
//! message naming the repository, its source and the samples that need it; a shallow
//! clone, or a source with no branch or tag, is refused instead of imported with a cut
//! history.
use std::path::Path;
use std::process::Command;

use kiln_services::datasets::{ImportError, ImportRequest};

use crate::harness::start;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits; returns (first, second).
fn make_repo(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("a.txt"), "one\n").unwrap();
    git(dir, &["add", "a.txt"]);
    git(dir, &["commit", "--quiet", "-m", "one"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("a.txt"), "two\n").unwrap();
    git(dir, &["commit", "--quiet", "-am", "two"]);
    (first, git(dir, &["rev-parse", "HEAD"]))
}

fn records(base_commit: &str) -> String {
    (1..=2)
        .map(|i| {
            serde_json::json!({"instance_id": format!("acme__calc-{i}"), "repo": "acme/calc",
                "base_commit": base_commit, "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": []})
            .to_string()
                + "\n"
        })
        .collect()
}

/// The import's problems (it must refuse with record problems, not a bare error).
async fn problems(repos: &Path, base_commit: &str) -> Vec<String> {
    let env = start(|_| {}).await;
    let text = records(base_commit);
    let outcome = env
        .kiln
        .datasets
        .import(ImportRequest {
            dataset: "imports",
            description: None,
            version_description: None,
            text: &text,
            repos_dir: Some(repos),
        })
        .await;
    match outcome {
        Err(ImportError::Records(problems)) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => panic!("an error naming nothing: {other}"),
        Ok(summary) => panic!("imported: {summary:?}"),
    }
}

#[tokio::test]
async fn a_corrupt_repository_is_named_with_its_samples() {
    let repos = tempfile::tempdir().unwrap();
    let dir = repos.path().join("acme").join("calc");
    let (first, _) = make_repo(&dir);
    // Every loose object of the repository becomes garbage.
    for entry in walkdir(&dir.join(".git").join("objects")) {
        std::fs::write(&entry, b"not an object").unwrap();
    }
    let problems = problems(repos.path(), &first).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert!(p.starts_with("repo acme/calc: cannot import "), "{p}");
    assert!(p.contains(&dir.display().to_string()), "{p}");
    assert!(
        p.contains("sample 1 (acme__calc-1), sample 2 (acme__calc-2)"),
        "{p}"
    );
}

#[tokio::test]
async fn a_shallow_clone_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_, second) = make_repo(&work.path().join("full"));
    let repos = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repos.path().join("acme")).unwrap();
    let url = format!("file://{}", work.path().join("full").display());
    let shallow = repos.path().join("acme").join("calc");
    git(
        work.path(),
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            &url,
            &shallow.display().to_string(),
        ],
    );
    let problems = problems(repos.path(), &second).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("is a shallow clone"), "{problems:?}");
    assert!(problems[0].starts_with("repo acme/calc:"), "{problems:?}");
}

#[tokio::test]
async fn a_source_without_refs_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (_, second) = make_repo(&work.path().join("full"));
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("acme").join("calc");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--quiet", "--bare"]);
    // The commit's objects are there, under no branch or tag (FETCH_HEAD only).
    let url = format!("file://{}", work.path().join("full").display());
    git(&bare, &["fetch", "--quiet", &url, "main"]);
    let problems = problems(repos.path(), &second).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("has no branch or tag"), "{problems:?}");
}

#[tokio::test]
async fn a_relative_repository_directory_is_found() {
    let work = tempfile::tempdir().unwrap();
    let (first, _) = make_repo(&work.path().join("full"));
    // Relative to this process's directory: git runs elsewhere, so the import must not
    // hand the relative path on.
    let repos = tempfile::tempdir_in(".").unwrap();
    std::fs::create_dir_all(repos.path().join("acme")).unwrap();
    std::fs::rename(
        work.path().join("full"),
        repos.path().join("acme").join("calc"),
    )
    .unwrap();
    let relative = Path::new(repos.path().file_name().unwrap());
    assert!(relative.is_relative());
    let env = start(|_| {}).await;
    let text = records(&first);
    let summary = env
        .kiln
        .datasets
        .import(ImportRequest {
            dataset: "imports",
            description: None,
            version_description: None,
            text: &text,
            repos_dir: Some(relative),
        })
        .await
        .unwrap_or_else(|e| panic!("a relative --repos: {e}"));
    assert_eq!(summary.created, 2, "{summary:?}");
}

/// The loose objects under `objects` (files in its two-hex-digit directories).
fn walkdir(objects: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(objects).unwrap().flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            files.extend(
                std::fs::read_dir(dir.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        }
    }
    assert!(
        !files.is_empty(),
        "no loose objects in {}",
        objects.display()
    );
    files
}
