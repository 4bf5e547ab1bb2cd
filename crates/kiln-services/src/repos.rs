//! Task repositories, kept as bare git repositories under `<data-dir>/repos/<owner>/<name>.git`.
//! Kiln drives the `git` command rather than reimplementing git: it is the reference
//! implementation, present wherever the samples' repositories come from, and what the
//! SWE-bench harness itself uses.
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_git::{Git, GitError};

use crate::error::{ServiceError, ServiceResult};
use crate::records::check_repo;

/// Deadline of an import's `init` and `fetch` (a large repository from a local path).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Deadline of a lookup or an archive.
const READ_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Largest tree `archive` returns (it is held in memory).
const MAX_ARCHIVE_BYTES: usize = 2 * 1024 * 1024 * 1024;

pub struct RepoStore {
    root: PathBuf,
}

impl RepoStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where `owner/name` is kept. The name was checked at import; check again, since
    /// this path is handed to a subprocess.
    pub fn path_for(&self, repo: &str) -> ServiceResult<PathBuf> {
        check_repo(repo).map_err(ServiceError::Internal)?;
        Ok(self.root.join(format!("{repo}.git")))
    }

    /// Brings every branch and tag of `source` (a git directory, a bundle file, or
    /// anything `git fetch` accepts as a local path) into the stored repository.
    pub async fn import(&self, repo: &str, source: &Path) -> ServiceResult<()> {
        let dest = self.path_for(repo)?;
        if !dest.exists() {
            let parent = dest
                .parent()
                .ok_or_else(|| ServiceError::Internal("repository path has no parent".into()))?;
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io("create repository directory"))?;
            // Initialise beside the final name and rename, so a crash never leaves a
            // half-made repository under the real name.
            let tmp = tempfile::Builder::new()
                .prefix(".import-")
                .tempdir_in(parent)
                .map_err(io("create temporary repository"))?;
            git(&["init", "--bare", "--quiet"], tmp.path()).await?;
            fetch_all(tmp.path(), source).await?;
            let tmp = tmp.keep();
            if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                // Another import won the race: theirs is as good as ours.
                if !dest.exists() {
                    return Err(io("store repository")(e));
                }
            }
        }
        fetch_all(&dest, source).await
    }

    pub async fn has_commit(&self, repo: &str, commit: &str) -> ServiceResult<bool> {
        let dest = self.path_for(repo)?;
        if !dest.exists() {
            return Ok(false);
        }
        let found = Git::new()
            .arg("-C")
            .arg(&dest)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .timeout(READ_TIMEOUT)
            .output_async()
            .await;
        match found {
            Ok(_) => Ok(true),
            Err(GitError::Failed { .. }) => Ok(false),
            Err(e) => Err(ServiceError::Internal(e.to_string())),
        }
    }

    /// The tree at `commit` as an uncompressed tar, every path under `prefix`.
    pub async fn archive(&self, repo: &str, commit: &str, prefix: &str) -> ServiceResult<Vec<u8>> {
        let dest = self.path_for(repo)?;
        let output = Git::new()
            .arg("-C")
            .arg(&dest)
            .args([
                "archive",
                "--format=tar",
                &format!("--prefix={prefix}"),
                commit,
            ])
            .timeout(READ_TIMEOUT)
            .max_stdout(MAX_ARCHIVE_BYTES)
            .output_async()
            .await
            .map_err(|e| match e {
                GitError::Failed { stderr_tail, .. } => ServiceError::Internal(format!(
                    "git archive of {repo}@{commit} failed: {stderr_tail}"
                )),
                other => ServiceError::Internal(format!("git archive of {repo}@{commit}: {other}")),
            })?;
        Ok(output.stdout)
    }
}

async fn fetch_all(repo_dir: &Path, source: &Path) -> ServiceResult<()> {
    let source = source
        .to_str()
        .ok_or_else(|| ServiceError::Internal("repository source path is not UTF-8".into()))?;
    git(
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            source,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
        repo_dir,
    )
    .await
}

/// Runs an import's git command in `dir`. The source is a local path or bundle by design,
/// so the `file` transport is allowed here.
async fn git(args: &[&str], dir: &Path) -> ServiceResult<()> {
    Git::new()
        .args(args)
        .current_dir(dir)
        .allow_file_protocol()
        .timeout(IMPORT_TIMEOUT)
        .output_async()
        .await
        .map(|_| ())
        .map_err(|e| match e {
            GitError::Spawn(e) => io("run git (is it installed?)")(e),
            GitError::Failed { stderr_tail, .. } => ServiceError::Internal(format!(
                "git {} failed: {stderr_tail}",
                args.first().copied().unwrap_or_default(),
            )),
            other => ServiceError::Internal(other.to_string()),
        })
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("cannot {what}: {e}"))
}
