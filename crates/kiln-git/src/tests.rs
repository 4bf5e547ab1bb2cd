use std::path::Path;
use std::process::Command;

use super::*;

/// The caller's own git, for setting repositories up (not under test).
fn plain_git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Waits (bounded) until `pid` is gone or a zombie awaiting its reaper: SIGKILL reached it.
fn wait_gone(pid: i32) {
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(gone(), "process {pid}, started by git, is still alive");
}

fn repo_with_one_commit(dir: &Path) {
    plain_git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("f"), "x").expect("write");
    plain_git(dir, &["add", "f"]);
    plain_git(dir, &["commit", "-qm", "one"]);
}

#[test]
fn a_hook_in_the_repository_does_not_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    repo_with_one_commit(&repo);
    let marker = dir.path().join("hook-ran");
    let hook = repo.join(".git/hooks/post-checkout");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).expect("hook");
    let mut perms = std::fs::metadata(&hook).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&hook, perms).expect("chmod");

    Git::new()
        .current_dir(&repo)
        .args(["checkout", "-q", "-b", "other"])
        .output()
        .expect("checkout");
    assert!(!marker.exists(), "the repository's hook ran");

    // The same checkout by plain git runs it: the hook is a real one.
    plain_git(&repo, &["checkout", "-q", "-b", "third"]);
    assert!(marker.exists(), "the control checkout did not run the hook");
}

#[test]
fn the_environment_is_cleared_and_home_is_private() {
    let out = Git::new()
        .env("GIT_EXTRA", "kept")
        .env("GIT_CONFIG_GLOBAL", "/tmp/attacker.gitconfig")
        .args(["-c", "alias.showenv=!env", "showenv"])
        .output()
        .expect("alias runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let vars: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    // What the shell of the alias and git itself add; nothing of this test's environment
    // (cargo's CARGO_* variables, the user's) besides PATH.
    let allowed = |k: &str| {
        k.starts_with("GIT_") || ["PATH", "HOME", "PWD", "OLDPWD", "SHLVL", "_"].contains(&k)
    };
    for (name, _) in &vars {
        assert!(allowed(name), "{name} leaked into git's environment");
    }
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO")),
        "the test must run with variables to leak"
    );
    assert_eq!(get("GIT_EXTRA"), Some("kept"));
    assert_eq!(
        get("GIT_CONFIG_GLOBAL"),
        Some("/dev/null"),
        "fixed variables win"
    );
    assert_eq!(get("GIT_CONFIG_NOSYSTEM"), Some("1"));
    assert_eq!(get("GIT_TERMINAL_PROMPT"), Some("0"));
    let home = get("HOME").expect("HOME set");
    assert_ne!(Some(home), std::env::var("HOME").ok().as_deref());
    assert!(home.contains("kiln-git-home-"), "{home}");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let alias = format!(
        "alias.hang=!sh -c 'echo $$ > {}; exec sleep 600'",
        pid_file.display()
    );
    let err = Git::new()
        .args(["-c", &alias, "hang"])
        .timeout(Duration::from_secs(2))
        .output()
        .expect_err("cannot finish");
    assert!(matches!(err, GitError::TimedOut { .. }), "{err:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the grandchild started")
        .trim()
        .parse()
        .expect("pid");
    wait_gone(pid);
}

#[test]
fn local_remotes_need_the_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    std::fs::create_dir(&source).expect("mkdir");
    repo_with_one_commit(&source);
    let clone = |name: &str, git: Git| {
        git.args(["clone", "--bare", "--quiet", "--no-local"])
            .arg(&source)
            .arg(dir.path().join(name))
            .output()
    };
    let err = clone("refused.git", Git::new()).expect_err("file transport refused");
    assert!(
        err.stderr_tail().contains("not allowed"),
        "{err}: {}",
        err.stderr_tail()
    );
    clone("allowed.git", Git::new().allow_file_protocol()).expect("opted in");
}

#[test]
fn stdout_is_capped_and_failures_carry_stderr() {
    let err = Git::new()
        .args(["-c", "alias.big=!head -c 100000 /dev/zero", "big"])
        .max_stdout(1000)
        .output()
        .expect_err("too much output");
    assert!(
        matches!(err, GitError::OutputTooLarge { limit: 1000, .. }),
        "{err:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    repo_with_one_commit(dir.path());
    let err = Git::new()
        .current_dir(dir.path())
        .args([
            "rev-parse",
            "--verify",
            "--end-of-options",
            "nothere^{commit}",
        ])
        .output()
        .expect_err("no such ref");
    match &err {
        GitError::Failed {
            command,
            stderr_tail,
            ..
        } => {
            assert_eq!(command, "rev-parse");
            assert!(stderr_tail.contains("fatal"), "{stderr_tail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let ok = Git::new()
        .current_dir(dir.path())
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("HEAD resolves");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim().len(), 40);
}

#[test]
fn a_watch_and_a_cancel_flag_stop_git() {
    let hang = ["-c", "alias.hang=!sleep 600", "hang"];
    let err = Git::new()
        .args(hang)
        .output_watched(Duration::from_millis(10), || Err("too big".into()))
        .expect_err("stopped");
    assert!(
        matches!(&err, GitError::Stopped { reason, .. } if reason == "too big"),
        "{err:?}"
    );
    let flag = Arc::new(AtomicBool::new(true));
    let err = Git::new()
        .args(hang)
        .cancel_on(flag)
        .output()
        .expect_err("cancelled");
    assert!(matches!(err, GitError::Cancelled { .. }), "{err:?}");
}

#[tokio::test]
async fn dropping_the_async_future_kills_git() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    let alias = format!(
        "alias.hang=!sh -c 'echo $$ > {}; exec sleep 600'",
        pid_file.display()
    );
    let run = Git::new().args(["-c", &alias, "hang"]).output_async();
    // The future is dropped once the grandchild has written its pid.
    let pid_written = async {
        while std::fs::read_to_string(&pid_file).map_or(true, |s| !s.ends_with('\n')) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        result = run => panic!("git ended: {result:?}"),
        () = pid_written => {}
    }
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    wait_gone(pid);
}
