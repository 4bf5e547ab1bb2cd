//! Where a job's repository comes from, and the git commands that fetch it onto the host.
//!
//! Accepted: `https://…`, `http://…`, `owner/name` (on the configured git host), and —
//! only under `agent_jobs.local_repo_root` — an absolute path or a `file://` URL. Every
//! other transport (`ssh`, `ext::`, `git://`, …) is refused, also by `GIT_ALLOW_PROTOCOL`.
//!
//! Credentials for private repositories travel in git's environment configuration
//! (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`), never on the command line
//! (other users can read it in `/proc`) and never in the clone's `.git/config`; redirects
//! are not followed, so the header cannot be replayed to another host. A remote URL is
//! vetted ([`crate::outbound`]) before the job is accepted, and git connects only to the
//! address that was vetted (`http.curloptResolve`).
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use kiln_git::{Git, GitError};

use crate::error::{ServiceError, ServiceResult};
use crate::outbound::Vetted;

pub(crate) const MAX_REPO_CHARS: usize = 2048;
pub(crate) const MAX_REF_CHARS: usize = 255;
/// Output cap of the git commands that print little (a commit id, nothing).
const SMALL_OUTPUT: usize = 64 * 1024;

/// A validated repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RepoSource {
    /// An `http(s)://` URL.
    Remote(String),
    /// A canonical directory under the local repository root.
    Local(PathBuf),
}

impl RepoSource {
    pub(crate) fn parse(
        repo: &str,
        git_host: &str,
        local_root: Option<&Path>,
    ) -> ServiceResult<Self> {
        let bad = |msg: String| ServiceError::invalid(&["repo"], msg, "value_error");
        if repo.is_empty() || repo.len() > MAX_REPO_CHARS || repo.chars().any(char::is_control) {
            return Err(bad(format!(
                "repo must be 1 to {MAX_REPO_CHARS} characters without control characters"
            )));
        }
        if let Some(rest) = repo.strip_prefix("file://") {
            return Self::local(Path::new(rest), local_root).map_err(bad);
        }
        if repo.starts_with('/') {
            return Self::local(Path::new(repo), local_root).map_err(bad);
        }
        if repo.starts_with("https://") || repo.starts_with("http://") {
            if repo.contains(char::is_whitespace) {
                return Err(bad("a repository URL cannot contain spaces".into()));
            }
            return Self::remote(repo).map_err(bad);
        }
        let shorthand = repo.split('/').collect::<Vec<_>>();
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if shorthand.len() == 2 && shorthand.iter().all(|p| part_ok(p)) {
            let name = shorthand[1].strip_suffix(".git").unwrap_or(shorthand[1]);
            return Self::remote(&format!(
                "{}/{}/{name}.git",
                git_host.trim_end_matches('/'),
                shorthand[0]
            ))
            .map_err(bad);
        }
        Err(bad(
            "repo must be owner/name, an https:// or http:// git URL, or a local path (file://) \
             under the server's local repository root"
                .into(),
        ))
    }

    /// An http(s) URL in its normalised form: git is handed what the address check saw
    /// (`http://0x7f.1/` is `http://127.0.0.1/` to both), not a string two URL parsers
    /// might read differently.
    fn remote(repo: &str) -> Result<Self, String> {
        let url = url::Url::parse(repo).map_err(|e| format!("{repo} is not a valid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("{repo} is not an http(s) URL with a host"));
        }
        Ok(Self::Remote(url.into()))
    }

    /// The URL to vet before anything connects (`None` for a local repository).
    pub(crate) fn url(&self) -> Option<url::Url> {
        match self {
            Self::Remote(url) => url::Url::parse(url).ok(),
            Self::Local(_) => None,
        }
    }

    fn local(path: &Path, root: Option<&Path>) -> Result<Self, String> {
        let Some(root) = root else {
            return Err(
                "local repositories are not enabled on this server (agent_jobs.local_repo_root)"
                    .into(),
            );
        };
        // Canonical forms, so that neither `..` nor a symbolic link leaves the root.
        let outside = || {
            format!(
                "{} is not a repository under the local repository root",
                path.display()
            )
        };
        let root = root.canonicalize().map_err(|_| outside())?;
        let path = path.canonicalize().map_err(|_| outside())?;
        if !path.starts_with(&root) || !path.is_dir() {
            return Err(outside());
        }
        Ok(Self::Local(path))
    }

    /// Whether this is a remote URL under `git_host` (scheme, host and port alike).
    pub(crate) fn is_on_host(&self, git_host: &str) -> bool {
        match self {
            Self::Remote(url) => url.starts_with(&format!("{}/", git_host.trim_end_matches('/'))),
            Self::Local(_) => false,
        }
    }

    /// What git is given to clone.
    fn clone_argument(&self) -> &std::ffi::OsStr {
        match self {
            Self::Remote(url) => url.as_ref(),
            Self::Local(path) => path.as_os_str(),
        }
    }
}

/// A ref must look like one: no option-like or whitespace-laden value reaches git.
pub(crate) fn check_ref(git_ref: &str) -> ServiceResult<()> {
    let ok = !git_ref.is_empty()
        && git_ref.len() <= MAX_REF_CHARS
        && !git_ref.starts_with('-')
        && !git_ref.contains("..")
        && !git_ref
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            &["ref"],
            format!("ref must be a branch, tag or commit name of 1 to {MAX_REF_CHARS} characters"),
            "value_error",
        ))
    }
}

/// The environment of every git command Kiln runs for a job, on top of what [`kiln_git`]
/// always sets (no system or user configuration, no prompts, no hooks): only the
/// transports `source` needs, and the credential header when there is a token.
pub(crate) fn git_env(
    source: &RepoSource,
    token: Option<&str>,
    pin: Option<&Vetted>,
) -> Vec<(String, String)> {
    let protocols = match source {
        RepoSource::Remote(_) => "http:https",
        RepoSource::Local(_) => "file",
    };
    let mut env = vec![("GIT_ALLOW_PROTOCOL".to_string(), protocols.to_string())];
    let mut config = Vec::new();
    if let Some(token) = token {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        config.push((
            "http.extraHeader".to_string(),
            format!("Authorization: Basic {basic}"),
        ));
    }
    config.push(("http.followRedirects".to_string(), "false".to_string()));
    // curl connects to the address that was checked, whatever a second lookup would say.
    if let Some(resolve) = pin.and_then(Vetted::curl_resolve) {
        config.push(("http.curloptResolve".to_string(), resolve));
    }
    env.push(("GIT_CONFIG_COUNT".to_string(), config.len().to_string()));
    for (i, (key, value)) in config.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
    }
    env
}

/// How a git command ended badly, in words for the job's error.
fn failure(what: &str, error: &GitError) -> String {
    match error {
        GitError::Failed { stderr_tail, .. } if stderr_tail.is_empty() => what.to_string(),
        GitError::Failed { stderr_tail, .. } => format!("{what}: {stderr_tail}"),
        GitError::TimedOut { after, .. } => format!("git timed out after {} s", after.as_secs()),
        other => other.to_string(),
    }
}

/// A git command with the job's environment, deadline and output cap.
fn job_git(env: &[(String, String)], timeout: Duration, max_stdout: usize) -> Git {
    Git::new()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .timeout(timeout)
        .max_stdout(max_stdout)
}

/// Runs git with the job's environment and returns its standard output.
async fn git(
    env: &[(String, String)],
    args: &[&std::ffi::OsStr],
    timeout: Duration,
    max_stdout: usize,
) -> Result<Vec<u8>, String> {
    job_git(env, timeout, max_stdout)
        .args(args)
        .output_async()
        .await
        .map(|out| out.stdout)
        .map_err(|e| failure("git failed", &e))
}

/// The limits of fetching one repository.
pub(crate) struct FetchLimits {
    pub timeout: Duration,
    pub max_bytes: u64,
}

/// Clones `source` bare into `git_dir`, killing git when it runs past the time or the
/// size limit (checked as it writes).
pub(crate) async fn clone_bare(
    source: &RepoSource,
    env: &[(String, String)],
    git_dir: &Path,
    limits: &FetchLimits,
) -> Result<(), String> {
    let mut command = job_git(env, limits.timeout, 64 * 1024).args(["clone", "--bare", "--quiet"]);
    if matches!(source, RepoSource::Local(_)) {
        // Through the pack protocol, not by copying the object directory (which
        // would follow whatever links the source holds).
        command = command.arg("--no-local").allow_file_protocol();
    }
    let command = command.arg("--").arg(source.clone_argument()).arg(git_dir);
    let too_large = format!(
        "the repository is larger than the limit of {} bytes",
        limits.max_bytes
    );
    let (watched, max_bytes) = (git_dir.to_path_buf(), limits.max_bytes);
    let watch_message = too_large.clone();
    let cloned = command
        .output_watched_async(Duration::from_millis(500), move || {
            if dir_size_blocking(watched.clone()) > max_bytes {
                Err(watch_message.clone())
            } else {
                Ok(())
            }
        })
        .await;
    match cloned {
        Ok(_) => {}
        Err(GitError::TimedOut { .. }) => {
            return Err(format!(
                "cloning took longer than {} s",
                limits.timeout.as_secs()
            ))
        }
        Err(GitError::Stopped { reason, .. }) => return Err(reason),
        Err(e) => return Err(failure("cannot clone the repository", &e)),
    }
    if dir_size(git_dir.to_path_buf()).await > limits.max_bytes {
        return Err(too_large);
    }
    Ok(())
}

/// The commit `git_ref` names (HEAD when `None`), or git's own message.
pub(crate) async fn resolve_ref(
    env: &[(String, String)],
    git_dir: &Path,
    git_ref: Option<&str>,
    timeout: Duration,
) -> Result<String, String> {
    let spec = format!("{}^{{commit}}", git_ref.unwrap_or("HEAD"));
    let dir = git_dir_arg(git_dir);
    let out = git(
        env,
        &[
            dir.as_ref(),
            "rev-parse".as_ref(),
            "--verify".as_ref(),
            "--end-of-options".as_ref(),
            spec.as_ref(),
        ],
        timeout,
        SMALL_OUTPUT,
    )
    .await
    .map_err(|e| {
        format!(
            "ref {} not found in the repository: {e}",
            git_ref.unwrap_or("HEAD")
        )
    })?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

fn git_dir_arg(git_dir: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from("--git-dir=");
    arg.push(git_dir);
    arg
}

fn work_tree_arg(work_tree: &Path) -> std::ffi::OsString {
    let mut arg = std::ffi::OsString::from("--work-tree=");
    arg.push(work_tree);
    arg
}

/// Writes `commit`'s tree into `work_tree` (and the index kept in `git_dir`). The git
/// directory stays outside the work tree, so the agent cannot tamper with what the diff
/// is computed against.
pub(crate) async fn checkout(
    env: &[(String, String)],
    git_dir: &Path,
    work_tree: &Path,
    commit: &str,
    timeout: Duration,
) -> Result<(), String> {
    let (dir, tree) = (git_dir_arg(git_dir), work_tree_arg(work_tree));
    git(
        env,
        &[
            dir.as_ref(),
            tree.as_ref(),
            "-c".as_ref(),
            "core.bare=false".as_ref(),
            "read-tree".as_ref(),
            "--reset".as_ref(),
            "-u".as_ref(),
            commit.as_ref(),
        ],
        timeout,
        SMALL_OUTPUT,
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("cannot check {commit} out: {e}"))
}

/// The work tree's changes against `commit`, new files included (ignored ones are not),
/// as a binary-safe patch of at most `max_bytes` (a larger one is an error).
pub(crate) async fn diff_against(
    env: &[(String, String)],
    git_dir: &Path,
    work_tree: &Path,
    commit: &str,
    timeout: Duration,
    max_bytes: u64,
) -> Result<Vec<u8>, String> {
    let (dir, tree) = (git_dir_arg(git_dir), work_tree_arg(work_tree));
    let base: [&std::ffi::OsStr; 4] = [
        dir.as_ref(),
        tree.as_ref(),
        "-c".as_ref(),
        "core.bare=false".as_ref(),
    ];
    let mut add = base.to_vec();
    add.extend(["add", "--all"].map(OsStr::new));
    git(env, &add, timeout, SMALL_OUTPUT)
        .await
        .map_err(|e| format!("cannot collect the changes: {e}"))?;
    let mut diff = base.to_vec();
    diff.extend(
        [
            "diff",
            "--cached",
            "--binary",
            "--no-color",
            "--no-ext-diff",
            commit,
        ]
        .map(OsStr::new),
    );
    let max_stdout = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    match job_git(env, timeout, max_stdout)
        .args(&diff)
        .output_async()
        .await
    {
        Ok(out) => Ok(out.stdout),
        Err(GitError::OutputTooLarge { .. }) => Err(format!(
            "the agent's diff is larger than the limit of {max_bytes} bytes"
        )),
        Err(e) => Err(format!(
            "cannot compute the diff: {}",
            failure("git failed", &e)
        )),
    }
}

/// Bytes of the files under `dir` (symbolic links not followed), on a blocking thread.
pub(crate) async fn dir_size(dir: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || dir_size_blocking(dir))
        .await
        .unwrap_or(u64::MAX)
}

/// Bytes of the files under `dir` (symbolic links not followed).
fn dir_size_blocking(dir: PathBuf) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_transports_are_accepted() {
        let host = "https://github.com";
        assert_eq!(
            RepoSource::parse("org/repo", host, None).ok(),
            Some(RepoSource::Remote("https://github.com/org/repo.git".into()))
        );
        assert!(matches!(
            RepoSource::parse("https://example.com/a.git", host, None),
            Ok(RepoSource::Remote(_))
        ));
        for bad in [
            "ssh://h/x",
            "ext::sh -c id",
            "git://h/x",
            "-u",
            "a/b/c",
            "../x",
            "/tmp",
            "file:///tmp",
            "",
        ] {
            assert!(
                RepoSource::parse(bad, host, None).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn only_the_git_host_gets_credentials() {
        let host = "https://github.com";
        let on = |repo: &str| {
            RepoSource::parse(repo, host, None)
                .map(|s| s.is_on_host(host))
                .unwrap_or(false)
        };
        assert!(on("org/repo"));
        assert!(on("https://github.com/org/repo.git"));
        assert!(!on("https://github.com.evil.example/org/repo.git"));
        assert!(!on("http://github.com/org/repo.git"));
        assert!(!on("https://example.com/org/repo.git"));
    }

    #[test]
    fn local_paths_must_stay_under_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let inside = root.path().join("repo");
        std::fs::create_dir(&inside).expect("mkdir");
        let ok = RepoSource::parse(inside.to_str().expect("utf8"), "", Some(root.path()));
        assert!(matches!(ok, Ok(RepoSource::Local(_))), "{ok:?}");
        let url = format!("file://{}", inside.display());
        assert!(RepoSource::parse(&url, "", Some(root.path())).is_ok());
        let escape = format!("{}/repo/../..", root.path().display());
        assert!(RepoSource::parse(&escape, "", Some(root.path())).is_err());
        let link = root.path().join("link");
        std::os::unix::fs::symlink("/", &link).expect("symlink");
        assert!(RepoSource::parse(link.to_str().expect("utf8"), "", Some(root.path())).is_err());
    }

    #[test]
    fn refs_that_look_like_options_are_refused() {
        for good in ["main", "v1.2", "feature/x", "0123abcd"] {
            assert!(check_ref(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "--upload-pack=x", "a b", "a..b", "a:b", "HEAD^"] {
            assert!(check_ref(bad).is_err(), "{bad:?}");
        }
    }

    /// Serves the files under `root` over HTTP (git's "dumb" protocol), one request per
    /// connection, until the test ends.
    fn dumb_http_server(root: PathBuf) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let mut header = String::new();
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    header.clear();
                }
                let file = path.split('?').next().unwrap_or("").trim_start_matches('/');
                let body = (!file.contains("..")).then(|| std::fs::read(root.join(file)).ok());
                let mut stream = &stream;
                let _ = match body.flatten() {
                    Some(body) => stream
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .as_bytes(),
                        )
                        .and_then(|()| stream.write_all(&body)),
                    None => {
                        stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    }
                };
            }
        });
        port
    }

    fn run_git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }

    /// The clone goes to the vetted address: a name no resolver knows clones through
    /// its pin, so git does not look the name up again (DNS rebinding).
    #[tokio::test]
    async fn the_clone_connects_to_the_pinned_address_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("work");
        std::fs::create_dir(&work).expect("mkdir");
        run_git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("f"), "x").expect("write");
        run_git(&work, &["add", "f"]);
        run_git(&work, &["commit", "-qm", "one"]);
        let served = dir.path().join("served");
        std::fs::create_dir(&served).expect("mkdir");
        run_git(&served, &["clone", "-q", "--bare", "../work", "r.git"]);
        run_git(&served.join("r.git"), &["update-server-info"]);
        let port = dumb_http_server(served);

        let url = format!("http://kiln-pinned.invalid:{port}/r.git");
        let source = RepoSource::parse(&url, "", None).expect("parses");
        let pin = Vetted {
            host: "kiln-pinned.invalid".into(),
            port,
            // Nothing listens on the first: curl falls back to the next pinned address.
            addrs: vec![
                std::net::IpAddr::from([127, 0, 0, 2]),
                std::net::IpAddr::from([127, 0, 0, 1]),
            ],
            is_name: true,
        };
        let limits = FetchLimits {
            timeout: Duration::from_secs(60),
            max_bytes: 1 << 20,
        };
        let unpinned = clone_bare(
            &source,
            &git_env(&source, None, None),
            &dir.path().join("a.git"),
            &limits,
        )
        .await;
        assert!(
            unpinned.is_err(),
            "the name does not resolve without the pin"
        );
        let env = git_env(&source, None, Some(&pin));
        clone_bare(&source, &env, &dir.path().join("b.git"), &limits)
            .await
            .expect("cloned through the pin");

        // A name that resolves to the server, pinned elsewhere: the pin wins over DNS.
        let url = format!("http://localhost:{port}/r.git");
        let source = RepoSource::parse(&url, "", None).expect("parses");
        let env = git_env(&source, None, None);
        clone_bare(&source, &env, &dir.path().join("c.git"), &limits)
            .await
            .expect("localhost reaches the server");
        let elsewhere = Vetted {
            host: "localhost".into(),
            port,
            addrs: vec![std::net::IpAddr::from([127, 0, 0, 2])],
            is_name: true,
        };
        let env = git_env(&source, None, Some(&elsewhere));
        let pinned = clone_bare(&source, &env, &dir.path().join("d.git"), &limits).await;
        assert!(pinned.is_err(), "git looked the name up again");
    }

    #[test]
    fn a_token_travels_only_in_the_environment() {
        let source = RepoSource::Remote("https://example.com/a.git".into());
        let env = git_env(&source, Some("s3cret"), None);
        let get = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("GIT_CONFIG_COUNT").as_deref(), Some("2"));
        assert_eq!(get("GIT_CONFIG_KEY_0").as_deref(), Some("http.extraHeader"));
        assert_eq!(
            get("GIT_CONFIG_KEY_1").as_deref(),
            Some("http.followRedirects")
        );
        assert_eq!(get("GIT_CONFIG_VALUE_1").as_deref(), Some("false"));
        let header = get("GIT_CONFIG_VALUE_0").expect("header");
        let encoded = header.strip_prefix("Authorization: Basic ").expect("basic");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        assert_eq!(decoded, b"x-access-token:s3cret");
        assert_eq!(get("GIT_ALLOW_PROTOCOL").as_deref(), Some("http:https"));
        let none = git_env(&source, None, None);
        assert!(!none.iter().any(|(_, v)| v.contains("Authorization")));
    }
}
