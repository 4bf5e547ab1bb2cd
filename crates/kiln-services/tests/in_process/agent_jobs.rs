//! Agent jobs over the fake backend: a real clone of a local repository on the host, the
//! agent's command answered by the fake (which edits the bound checkout as an agent
//! would), the diff and logs collected into the result.
use std::io::Read;
use std::path::Path;
use std::process::Command;

use kiln_services::agent_jobs::CreateAgentJob;
use kiln_store::{AgentJobRecord, JobStatus};
use kiln_test_support::Reply;

use crate::harness::{eventually, start, Env};

pub(crate) fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.test"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A repository with one commit, under a fresh local repository root.
pub(crate) fn make_repo() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("calc");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("lib.py"), "def add(a, b):\n    return a - b\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "first"]);
    (root, repo)
}

/// A `script` agent job of `env`'s user on `repo`, just created.
pub(crate) async fn create_job(env: &Env, repo: &Path) -> AgentJobRecord {
    env.kiln
        .agent_jobs
        .create(CreateAgentJob {
            user_id: &env.user,
            repo: repo.to_str().unwrap(),
            git_ref: None,
            agent_id: "script",
        })
        .await
        .unwrap()
}

async fn run_job(env: &Env, repo: &Path) -> AgentJobRecord {
    let job = create_job(env, repo).await;
    eventually("the job ends", || async {
        let job = env
            .kiln
            .agent_jobs
            .get(&env.user, &job.job_id)
            .await
            .unwrap();
        matches!(job.status, JobStatus::Completed | JobStatus::Error).then_some(job)
    })
    .await
}

/// The files of a result archive (`.tar.gz`), by name.
fn archive_files(path: &Path) -> std::collections::BTreeMap<String, String> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        files.insert(name, text);
    }
    files
}

#[tokio::test]
async fn an_agent_that_succeeds_completes_with_its_diff_and_logs() {
    let (root, repo) = make_repo();
    let env = start(|c| c.agent_jobs.local_repo_root = Some(root.path().to_path_buf())).await;
    // The agent edits the checkout the sandbox sees at /workspace (a host directory).
    env.fake.on_exec(|call| {
        if !call.command.contains("agent.sh") {
            return None;
        }
        assert!(call.request.env.contains_key("KILN_JOB_SECRET"));
        let bind = call
            .spec
            .workspace
            .as_ref()
            .expect("the checkout is the workspace");
        assert_eq!(bind.target, "/workspace");
        std::fs::write(
            bind.dir.join("lib.py"),
            "def add(a, b):\n    return a + b\n",
        )
        .unwrap();
        Some(Reply::ok("agent says hi\n").with_stderr("a warning\n"))
    });
    let job = run_job(&env, &repo).await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert!(
        env.fake.running().is_empty(),
        "the job's sandbox was destroyed"
    );

    let (_, archive) = env
        .kiln
        .agent_jobs
        .result(&env.user, &job.job_id)
        .await
        .unwrap();
    let files = archive_files(&archive);
    assert!(
        files["diff.patch"].contains("-    return a - b\n+    return a + b"),
        "{files:?}"
    );
    assert_eq!(files["logs/stdout.log"], "agent says hi\n");
    assert_eq!(files["logs/stderr.log"], "a warning\n");
}

#[tokio::test]
async fn an_agent_that_fails_ends_the_job_in_error() {
    let (root, repo) = make_repo();
    let env = start(|c| c.agent_jobs.local_repo_root = Some(root.path().to_path_buf())).await;
    env.fake
        .respond("agent.sh", Reply::exit(3).with_stderr("boom\n"));
    let job = run_job(&env, &repo).await;
    assert_eq!(job.status, JobStatus::Error, "{job:?}");
    let message = job.error_message.unwrap_or_default();
    assert!(message.contains("exited with status 3: boom"), "{message}");
    assert!(env.fake.running().is_empty());
}

#[tokio::test]
async fn changes_that_cannot_be_collected_end_the_job_in_error() {
    let (root, repo) = make_repo();
    let env = start(|c| c.agent_jobs.local_repo_root = Some(root.path().to_path_buf())).await;
    env.fake.respond("agent.sh", Reply::ok("done\n"));
    env.fake.fail_destroys(Some("disk full"));
    let job = run_job(&env, &repo).await;
    assert_eq!(job.status, JobStatus::Error, "{job:?}");
    let message = job.error_message.unwrap_or_default();
    assert!(message.contains("could not be collected"), "{message}");
    assert!(env.fake.running().is_empty());
}
