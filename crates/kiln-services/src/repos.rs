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
    /// A source that cannot give the whole history (a shallow clone, one with no branch
    /// or tag) is refused before anything is stored.
    pub async fn import(&self, repo: &str, source: &Path) -> ServiceResult<()> {
        check_source(source).await?;
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

/// Refuses what would import a cut history: a shallow clone (its oldest commits have no
/// parents here, so a base commit may be there while its history is not), or a source
/// with no branch or tag (a fetch of `refs/heads/*` and `refs/tags/*` brings nothing,
/// leaving a base commit that only the source's loose objects held).
async fn check_source(source: &Path) -> ServiceResult<()> {
    let shown = source.display();
    if source.is_dir() {
        let shallow = git_stdout(&["rev-parse", "--is-shallow-repository"], source).await?;
        if shallow.trim() == "true" {
            return Err(ServiceError::Internal(format!(
                "{shown} is a shallow clone (its history is cut): import needs the whole \
                 history (run `git fetch --unshallow` there, or give a bundle made with \
                 `git bundle create X.bundle --all` from a full clone)"
            )));
        }
    }
    let path = source
        .to_str()
        .ok_or_else(|| ServiceError::Internal(format!("{shown}: the path is not UTF-8")))?;
    let cwd = source.parent().unwrap_or(Path::new("/"));
    let refs = git_stdout(&["ls-remote", "--heads", "--tags", path], cwd).await?;
    if refs.trim().is_empty() {
        return Err(ServiceError::Internal(format!(
            "{shown} has no branch or tag: nothing would be imported (create a branch at \
             the commits the records need, e.g. `git branch kiln-import <commit>`)"
        )));
    }
    Ok(())
}

/// Runs a read-only git command in `dir` and returns its stdout.
async fn git_stdout(args: &[&str], dir: &Path) -> ServiceResult<String> {
    Git::new()
        .args(args)
        .current_dir(dir)
        .allow_file_protocol()
        .timeout(READ_TIMEOUT)
        .output_async()
        .await
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .map_err(|e| git_error(args, e))
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
        .map_err(|e| git_error(args, e))
}

fn git_error(args: &[&str], e: GitError) -> ServiceError {
    match e {
        GitError::Spawn(e) => io("run git (is it installed?)")(e),
        GitError::Failed { stderr_tail, .. } => ServiceError::Internal(format!(
            "git {} failed: {}",
            args.first().copied().unwrap_or_default(),
            stderr_tail.trim_end()
        )),
        other => ServiceError::Internal(other.to_string()),
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> ServiceError {
    move |e| ServiceError::Internal(format!("cannot {what}: {e}"))
}
