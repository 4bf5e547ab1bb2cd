//! Agent jobs over real HTTP with real sandboxes: a `script` agent run over a git
//! repository created here, its diff and logs in the result, failures, the completion
//! secret, ownership, validation, cursor pagination and restarts. Every scenario runs on
//! SQLite, and on PostgreSQL when `KILN_TEST_POSTGRES_URL` is set.
use crate::{agent_job_support, common, sandbox};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use agent_job_support::{
    allow_git_host, basic_auth, create, finished, get_job, live_workspace, make_repo,
    private_git_host, result_files, script_awaiting_go, start, start_job, wait_for, wait_for_file,
    workspace, GitHost,
};
use common::{assert_error, assert_validation, bearer, git, json, Database};
use kiln_services::agent_jobs::{CloneCredentials, JobBilling, JobCharge};
use kiln_services::{ServiceError, ServiceResult};
use serde_json::{json, Value};

on_both_backends!(
    crate::agent_job_support::run;
    a_job_over_a_local_repository_yields_its_diff_and_logs,
    failing_scripts_and_missing_refs_end_in_error,
    the_completion_secret_alone_finishes_a_job,
    requests_are_validated,
    internal_addresses_are_refused_before_any_connection,
    cursor_pagination_walks_every_job_once,
    a_restart_ends_running_jobs_in_error,
    private_repositories_are_cloned_with_the_token_in_a_header,
    jobs_are_charged_when_accepted_and_refunded_on_error,
    a_team_orgs_job_is_seen_in_that_org_only,
);

async fn a_job_over_a_local_repository_yields_its_diff_and_logs(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("calc");
    let (first, _) = make_repo(
        &repo,
        "set -e\n\
         echo \"agent says hi in $PWD\"\n\
         echo 'a warning' >&2\n\
         test -n \"$KILN_JOB_SECRET\"\n\
         sed -i 's/a - b/a + b/' lib.py\n\
         mkdir -p pkg && echo 'brand new' > pkg/added.txt\n\
         rm NOTES\n",
    );
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();
    let id = start_job(&s, &key, &repo, Some(&first)).await;
    let job = wait_for(&s, &key, &id, finished).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["result_available"], true, "{job}");
    assert!(job["error"].is_null(), "{job}");
    assert!(
        job["started_at"].is_string() && job["completed_at"].is_string(),
        "{job}"
    );
    assert_eq!(
        (job["ref"].as_str(), job["agent_id"].as_str()),
        (Some(first.as_str()), Some("script"))
    );

    let files = result_files(&s, &key, &id).await;
    let diff = &files["diff.patch"];
    assert!(
        diff.contains("-    return a - b\n+    return a + b"),
        "{diff}"
    );
    assert!(
        !diff.contains("b - a"),
        "the diff is against the first commit: {diff}"
    );
    assert!(
        diff.contains("+++ b/pkg/added.txt") && diff.contains("+brand new"),
        "{diff}"
    );
    assert!(
        !diff.contains(".kiln/agent.sh"),
        "unchanged files are not in the diff: {diff}"
    );
    assert!(
        diff.contains("deleted file mode") && diff.contains("-to be removed"),
        "{diff}"
    );
    assert_eq!(files["logs/stdout.log"], "agent says hi in /workspace\n");
    assert_eq!(files["logs/stderr.log"], "a warning\n");
    let summary: Value = serde_json::from_str(&files["job.json"]).expect("job.json");
    assert_eq!(
        (summary["commit"].as_str(), summary["exit_code"].as_i64()),
        (Some(first.as_str()), Some(0))
    );

    // The diff applies to the commit it was taken against.
    let check = tempfile::tempdir().expect("tempdir");
    git(
        check.path(),
        &["clone", "-q", repo.to_str().expect("utf8"), "."],
    );
    git(check.path(), &["checkout", "-q", &first]);
    std::fs::write(check.path().join("agent.patch"), diff).expect("write");
    git(check.path(), &["apply", "agent.patch"]);
    assert_eq!(
        std::fs::read_to_string(check.path().join("lib.py")).expect("read"),
        "def add(a, b):\n    return a + b\n"
    );

    // Work files are gone; the sandbox too.
    let work = s
        .kiln
        .config
        .data_dir
        .join("agent-jobs")
        .join(&id)
        .join("work");
    assert!(!work.exists(), "{} left behind", work.display());
    let (_, listed) = s.get_as(&key, "/agent-jobs").await;
    assert_eq!(listed["jobs"][0]["job_id"], id.as_str(), "{listed}");

    // Another user sees none of it, on any endpoint.
    let (_, bob) = s.user("bob").await;
    let (status, body) = get_job(&s, &bob, &id).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get_as(&bob, &format!("/agent-jobs/{id}/result")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s.get_as(&bob, "/agent-jobs").await;
    assert_eq!(status, 200);
    assert_eq!(body["jobs"], json!([]), "{body}");
    let (status, body) = json(
        s.post(&format!("/agent-jobs/{id}/completion"))
            .json(&json!({"secret": bob, "outcome": "error"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    // Without credentials nothing but the completion answers.
    let response = s
        .get(&format!("/agent-jobs/{id}"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401);
}

/// A job started with an organization's key is the org's: a member sees it when acting
/// in the org (`X-Org-Slug`), not in their personal org; a non-member cannot name the org.
async fn a_team_orgs_job_is_seen_in_that_org_only(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("team");
    let (first, _) = make_repo(&repo, "echo team work\n");
    let s = start(db, repos.path()).await;
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let (status, org) = s
        .v1_call(
            Some(&alice),
            None,
            reqwest::Method::POST,
            "/orgs",
            Some(json!({"name": "Acme", "slug": "acme"})),
        )
        .await;
    assert_eq!(status, 201, "{org}");
    let (status, made) = s
        .v1_call(
            Some(&alice),
            None,
            reqwest::Method::POST,
            "/orgs/acme/api-keys",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let org_key = made["key"].as_str().expect("key").to_string();
    let id = start_job(&s, &org_key, &repo, Some(&first)).await;
    let job = wait_for(&s, &org_key, &id, finished).await;
    assert_eq!(job["status"], "completed", "{job}");

    let in_org = |key: &str, slug: Option<&str>| {
        let mut request = s
            .get(&format!("/agent-jobs/{id}"))
            .header("Authorization", bearer(key));
        if let Some(slug) = slug {
            request = request.header("X-Org-Slug", slug);
        }
        request.send()
    };
    let (status, body) = json(in_org(&alice, Some("acme")).await.expect("send")).await;
    assert_eq!((status, &body["job_id"]), (200, &json!(id)), "{body}");
    let (status, body) = json(in_org(&alice, None).await.expect("send")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = json(in_org(&bob, Some("acme")).await.expect("send")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = json(in_org(&bob, None).await.expect("send")).await;
    assert_error(status, &body, 404, "not_found");
}

async fn failing_scripts_and_missing_refs_end_in_error(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("broken");
    make_repo(
        &repo,
        "echo 'half done' > partial.txt\necho 'it broke' >&2\nexit 3\n",
    );
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();

    let failed = start_job(&s, &key, &repo, None).await;
    let missing = start_job(&s, &key, &repo, Some("no-such-branch")).await;
    let tagged = start_job(&s, &key, &repo, Some("v1")).await;

    let job = wait_for(&s, &key, &failed, finished).await;
    assert_eq!(job["status"], "error", "{job}");
    let error = job["error"].as_str().expect("error message");
    assert!(
        error.contains("status 3") && error.contains("it broke"),
        "{error}"
    );
    assert_eq!(
        job["result_available"], true,
        "a failed agent's logs and diff are kept: {job}"
    );
    let files = result_files(&s, &key, &failed).await;
    assert!(files["diff.patch"].contains("+half done"), "{files:?}");
    assert_eq!(files["logs/stderr.log"], "it broke\n");

    let job = wait_for(&s, &key, &missing, finished).await;
    assert_eq!(job["status"], "error", "{job}");
    let error = job["error"].as_str().expect("error message");
    assert!(
        error.contains("no-such-branch") && error.contains("fatal"),
        "git's message: {error}"
    );
    assert_eq!(job["result_available"], false);
    let (status, body) = s
        .get_as(&key, &format!("/agent-jobs/{missing}/result"))
        .await;
    assert_error(status, &body, 409, "conflict");

    let job = wait_for(&s, &key, &tagged, finished).await;
    assert_eq!(
        job["status"], "error",
        "the same script fails at a tag too: {job}"
    );
}

async fn the_completion_secret_alone_finishes_a_job(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("reporting");
    // The agent leaves its secret for the test, then waits for the test's go before ending.
    make_repo(
        &repo,
        &script_awaiting_go("rm -f .secret .go\necho finished > report.txt\n"),
    );
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();
    let id = start_job(&s, &key, &repo, None).await;
    let workspace = live_workspace(&s, &id);
    let secret = wait_for_file(&workspace.join(".secret")).await;
    assert_eq!(secret.len(), 48);

    let complete = |secret: &str, outcome: &str| {
        s.post(&format!("/agent-jobs/{id}/completion"))
            .json(&json!({"secret": secret, "outcome": outcome, "error_message": "from the agent"}))
            .send()
    };
    // A wrong secret and an unknown job are the same refusal.
    let (status, wrong) = json(complete("not-the-secret", "completed").await.expect("send")).await;
    assert_error(status, &wrong, 404, "not_found");
    let (status, unknown) = json(
        s.post("/agent-jobs/ajob_0000/completion")
            .json(&json!({"secret": secret, "outcome": "completed"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &unknown, 404, "not_found");
    assert_eq!(
        wrong["detail"]["message"]
            .as_str()
            .map(|m| m.replace(&id, "ID")),
        unknown["detail"]["message"]
            .as_str()
            .map(|m| m.replace("ajob_0000", "ID"))
    );
    let (status, body) = json(
        s.post(&format!("/agent-jobs/{id}/completion"))
            .json(&json!({"outcome": "completed"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["body", "secret"]);
    let (status, body) = json(complete(&secret, "maybe").await.expect("send")).await;
    assert_validation(status, &body, &["body", "outcome"]);
    let (_, job) = get_job(&s, &key, &id).await;
    assert_eq!(
        job["status"], "running",
        "refused reports change nothing: {job}"
    );

    let (status, job) = json(complete(&secret, "completed").await.expect("send")).await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["error"].is_null());
    // A second report on a finished job changes nothing.
    let (status, job) = json(complete(&secret, "error").await.expect("send")).await;
    assert_eq!(
        (status, job["status"].as_str()),
        (200, Some("completed")),
        "{job}"
    );

    // The runner still collects what the agent left, without changing the outcome.
    std::fs::write(workspace.join(".go"), "").expect("go");
    let job = wait_for(&s, &key, &id, |j| j["result_available"] == true).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["error"].is_null(), "{job}");
    let files = result_files(&s, &key, &id).await;
    assert!(files["diff.patch"].contains("+finished"), "{files:?}");
    assert!(!files["diff.patch"].contains(&secret), "{files:?}");
}

async fn requests_are_validated(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("r");
    make_repo(&repo, "true\n");
    let outside = tempfile::tempdir().expect("tempdir");
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();
    let path = repo.to_str().expect("utf8");

    let (status, body) = create(&s, &key, json!({"repo": path, "agent_id": "cursor"})).await;
    assert_validation(status, &body, &["body", "agent_id"]);
    let (status, body) = create(&s, &key, json!({"repo": path})).await;
    assert_validation(status, &body, &["body", "agent_id"]);
    let long = "a".repeat(65);
    let (status, body) = create(&s, &key, json!({"repo": path, "agent_id": long})).await;
    assert_validation(status, &body, &["body", "agent_id"]);
    assert_eq!(
        body["detail"][0]["msg"], "String should have 1 to 64 characters",
        "{body}"
    );
    for bad in [
        "ssh://example.com/x.git",
        "ext::sh -c id",
        "a/b/c",
        outside.path().to_str().expect("utf8"),
        "/etc",
    ] {
        let (status, body) = create(&s, &key, json!({"repo": bad, "agent_id": "script"})).await;
        assert_validation(status, &body, &["body", "repo"]);
    }
    let escape = format!("{path}/../../..");
    let (status, body) = create(&s, &key, json!({"repo": escape, "agent_id": "script"})).await;
    assert_validation(status, &body, &["body", "repo"]);
    for bad in ["--upload-pack=touch /tmp/x", "a b", ""] {
        let (status, body) = create(
            &s,
            &key,
            json!({"repo": path, "ref": bad, "agent_id": "script"}),
        )
        .await;
        assert_validation(status, &body, &["body", "ref"]);
    }
    let (status, _) = json(
        s.post("/agent-jobs")
            .json(&json!({"repo": path, "agent_id": "script"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = get_job(&s, &key, "ajob_unknown").await;
    assert_error(status, &body, 404, "not_found");
    let (_, listed) = s.get_as(&key, "/agent-jobs").await;
    assert_eq!(
        listed["jobs"],
        json!([]),
        "refused requests store nothing: {listed}"
    );
}

/// A listener that counts the connections it accepts.
async fn counting_listener(addr: &str) -> (u16, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *count.lock().expect("lock") += 1;
            drop(stream);
        }
    });
    (port, accepted)
}

async fn internal_addresses_are_refused_before_any_connection(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    // Something listens on the loopback ports the URLs name: a connection would show.
    let (v4, v4_accepts) = counting_listener("127.0.0.1:0").await;
    let (v6, v6_accepts) = counting_listener("[::1]:0").await;
    let allowed = repos.path().join("allowed");
    make_repo(&allowed, "echo allowed > allowed.txt\n");
    let bare = repos.path().join("allowed.git");
    git(
        repos.path(),
        &["clone", "-q", "--bare", "allowed", "allowed.git"],
    );
    git(&bare, &["update-server-info"]);
    let host = private_git_host(bare, "tok").await;
    let base = host.base.clone();
    let s = agent_job_support::start_with(db, repos.path(), move |c| {
        c.agent_jobs.allowed_internal_hosts = vec![base.trim_start_matches("http://").into()];
    })
    .await;
    let key = s.admin_key.clone();
    for repo in [
        // 127.0.0.1 is allowed on the git host's port only.
        format!("http://127.0.0.1:{v4}/org/x.git"),
        format!("http://localhost:{v4}/org/x.git"),
        format!("http://[::1]:{v6}/org/x.git"),
        format!("http://[::ffff:127.0.0.1]:{v4}/org/x.git"),
        format!("http://2130706433:{v4}/org/x.git"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.0.0.1/org/x.git".into(),
    ] {
        let (status, body) = create(&s, &key, json!({"repo": repo, "agent_id": "script"})).await;
        assert_validation(status, &body, &["body", "repo"]);
        assert!(
            body.to_string().contains("allowed_internal_hosts"),
            "the refusal says how to allow a host: {body}"
        );
    }
    let (_, listed) = s.get_as(&key, "/agent-jobs").await;
    assert_eq!(listed["jobs"], json!([]), "nothing was stored: {listed}");
    // Refused before the job exists, so nothing can connect later either.
    assert_eq!(*v4_accepts.lock().expect("lock"), 0);
    assert_eq!(*v6_accepts.lock().expect("lock"), 0);

    // The allowed host still works (it refuses without a token, so the job reaches it).
    let (status, job) = create(
        &s,
        &key,
        json!({"repo": format!("{}/org/private.git", host.base), "agent_id": "script"}),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let id = job["job_id"].as_str().expect("id");
    let job = wait_for(&s, &key, id, finished).await;
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot clone")),
        "{job}"
    );
    assert!(
        !host.seen.lock().expect("lock").is_empty(),
        "the allowed host was reached"
    );
}

async fn cursor_pagination_walks_every_job_once(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("r");
    make_repo(&repo, "true\n");
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();
    // Jobs at a missing ref end before any sandbox: cheap to make many of.
    let mut made = Vec::new();
    for _ in 0..7 {
        made.push(start_job(&s, &key, &repo, Some("nope")).await);
    }
    for id in &made {
        wait_for(&s, &key, id, finished).await;
    }
    let (_, bob) = s.user("bob").await;
    start_job(&s, &bob, &repo, Some("nope")).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut request = s
            .get("/agent-jobs?limit=3")
            .header("Authorization", bearer(&key));
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let (status, page) = json(request.send().await.expect("send")).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let jobs = page["jobs"].as_array().expect("jobs");
        assert!(jobs.len() <= 3);
        seen.extend(
            jobs.iter()
                .map(|j| j["job_id"].as_str().expect("id").to_string()),
        );
        assert_eq!(
            page["has_more"].as_bool(),
            Some(page["next_cursor"].is_string()),
            "{page}"
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    let mut newest_first = made.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "every job once, newest first, only the caller's"
    );
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);

    let (status, page) = s.get_as(&key, "/agent-jobs").await;
    assert_eq!(
        (status, page["jobs"].as_array().map(Vec::len)),
        (200, Some(7)),
        "default limit 20"
    );
    for bad in [
        "limit=0",
        "limit=-1",
        "limit=101",
        "limit=x",
        "cursor=garbage",
        "cursor=bm90OmEgY3Vyc29y",
    ] {
        let (status, body) = s.get_as(&key, &format!("/agent-jobs?{bad}")).await;
        let field = bad.split('=').next().expect("field");
        assert_validation(status, &body, &["query", field]);
    }
}

async fn a_restart_ends_running_jobs_in_error(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = repos.path().join("slow");
    make_repo(&repo, "touch .started\nsleep 100\n");
    let s = start(db, repos.path()).await;
    let key = s.admin_key.clone();
    let id = start_job(&s, &key, &repo, None).await;
    wait_for_file(&live_workspace(&s, &id).join(".started")).await;
    let workspace = workspace(&s, &id);
    let (_, job) = get_job(&s, &key, &id).await;
    assert_eq!(job["status"], "running", "{job}");

    let s = s.restart(true).await;
    let (status, job) = get_job(&s, &key, &id).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "error", "{job}");
    assert_eq!(job["error"], "interrupted by a server restart", "{job}");
    assert!(
        !workspace.exists(),
        "the cut-off job's work files are removed"
    );
}

/// The credential seam, as GitHub sign-in will fill it: one token for everybody.
struct FixedToken(&'static str);

#[async_trait::async_trait]
impl CloneCredentials for FixedToken {
    async fn token_for(&self, _user_id: &str) -> Option<String> {
        Some(self.0.to_string())
    }
}

async fn private_repositories_are_cloned_with_the_token_in_a_header(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let work = repos.path().join("private");
    make_repo(&work, "echo 'from a private repo' > found.txt\n");
    let bare = repos.path().join("private.git");
    git(
        repos.path(),
        &["clone", "-q", "--bare", "private", "private.git"],
    );
    git(&bare, &["update-server-info"]);
    let GitHost {
        base: host, seen, ..
    } = private_git_host(bare, "tok").await;
    let root = repos.path().to_path_buf();
    let host_for_config = host.clone();
    let s = sandbox::start_on(&db, move |c| {
        let agent = c.agent_jobs.agents.get_mut("script").expect("script agent");
        agent.image =
            kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
        c.agent_jobs.local_repo_root = Some(root);
        allow_git_host(c, &host_for_config);
        c.agent_jobs.git_host = host_for_config;
    })
    .await;
    let key = s.admin_key.clone();
    let start = |repo: String| {
        let s = &s;
        let key = key.clone();
        async move {
            let (status, job) = create(s, &key, json!({"repo": repo, "agent_id": "script"})).await;
            assert_eq!(status, 202, "{job}");
            let id = job["job_id"].as_str().expect("id").to_string();
            wait_for(s, &key, &id, finished).await
        }
    };

    // Without credentials the host refuses, and git does not prompt.
    let job = start("org/private".into()).await;
    assert_eq!(job["status"], "error", "{job}");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot clone")),
        "{job}"
    );

    s.kiln
        .agent_jobs
        .set_credentials(Arc::new(FixedToken("tok")));
    let job = start("org/private".into()).await;
    assert_eq!(job["status"], "completed", "{job}");
    let id = job["job_id"].as_str().expect("id");
    let files = result_files(&s, &key, id).await;
    assert!(
        files["diff.patch"].contains("+from a private repo"),
        "{files:?}"
    );
    let expected = basic_auth("tok");
    assert!(
        seen.lock()
            .expect("lock")
            .iter()
            .any(|(_, auth)| auth.as_deref() == Some(expected.as_str())),
        "the token travels as HTTP basic auth"
    );

    // Another host (here the same server under another name) never gets the token.
    let before = seen.lock().expect("lock").len();
    let other = host.replace("127.0.0.1", "localhost");
    let job = start(format!("{other}/org/private.git")).await;
    assert_eq!(job["status"], "error", "{job}");
    let sent: Vec<_> = seen.lock().expect("lock")[before..].to_vec();
    assert!(
        !sent.is_empty() && sent.iter().all(|(_, auth)| auth.is_none()),
        "{sent:?}"
    );

    // A redirect is not followed: the header could otherwise be replayed elsewhere.
    let before = seen.lock().expect("lock").len();
    let job = start(format!("{host}/moved/private.git")).await;
    assert_eq!(job["status"], "error", "{job}");
    assert!(
        !job.to_string().contains("tok"),
        "the token never shows: {job}"
    );
    let after: Vec<String> = seen.lock().expect("lock")[before..]
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        after.iter().all(|p| p.starts_with("moved/")),
        "redirect followed: {after:?}"
    );
}

/// The billing seam, as the ledger will fill it: records every call, refuses one user.
#[derive(Default)]
struct RecordingBilling {
    calls: Mutex<Vec<(&'static str, String)>>,
    broke_user: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl JobBilling for RecordingBilling {
    async fn charge(&self, job: &JobCharge) -> ServiceResult<()> {
        if self.broke_user.lock().expect("lock").as_deref() == Some(job.user_id.as_str()) {
            return Err(ServiceError::Conflict("insufficient balance".into()));
        }
        self.calls
            .lock()
            .expect("lock")
            .push(("charge", job.job_id.clone()));
        Ok(())
    }

    async fn refund(&self, job: &JobCharge) -> ServiceResult<()> {
        self.calls
            .lock()
            .expect("lock")
            .push(("refund", job.job_id.clone()));
        Ok(())
    }
}

async fn jobs_are_charged_when_accepted_and_refunded_on_error(db: Database) {
    let repos = tempfile::tempdir().expect("tempdir");
    let good = repos.path().join("good");
    make_repo(&good, "echo ok > ok.txt\n");
    let bad = repos.path().join("bad");
    make_repo(&bad, "exit 1\n");
    let s = start(db, repos.path()).await;
    let billing = Arc::new(RecordingBilling::default());
    s.kiln.agent_jobs.set_billing(billing.clone());
    let key = s.admin_key.clone();

    let ok = start_job(&s, &key, &good, None).await;
    let failed = start_job(&s, &key, &bad, None).await;
    let missing = start_job(&s, &key, &good, Some("nope")).await;
    for id in [&ok, &failed, &missing] {
        wait_for(&s, &key, id, finished).await;
    }
    let calls = billing.calls.lock().expect("lock").clone();
    let count = |kind: &str, id: &str| calls.iter().filter(|(k, j)| *k == kind && j == id).count();
    assert_eq!(
        (count("charge", &ok), count("refund", &ok)),
        (1, 0),
        "{calls:?}"
    );
    assert_eq!(
        (count("charge", &failed), count("refund", &failed)),
        (1, 1),
        "{calls:?}"
    );
    assert_eq!(
        (count("charge", &missing), count("refund", &missing)),
        (1, 1),
        "{calls:?}"
    );

    // A refused charge refuses the job, and nothing is stored.
    let (broke_id, broke_key) = s.user("broke").await;
    *billing.broke_user.lock().expect("lock") = Some(broke_id);
    let (status, body) = create(
        &s,
        &broke_key,
        json!({"repo": good.to_str().expect("utf8"), "agent_id": "script"}),
    )
    .await;
    assert_error(status, &body, 409, "conflict");
    let (_, listed) = s.get_as(&broke_key, "/agent-jobs").await;
    assert_eq!(listed["jobs"], json!([]), "{listed}");
}
