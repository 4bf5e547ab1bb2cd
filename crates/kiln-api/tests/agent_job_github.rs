//! A private repository cloned for an agent job with the token of a real GitHub sign-in:
//! the user signs in through the stand-in GitHub (`github_fake`), so the sealed token is
//! stored by the real flow; a stand-in git host lets in only that token. Real HTTP, real
//! sandboxes, on SQLite and on PostgreSQL (`KILN_TEST_POSTGRES_URL`; skipped without it,
//! except in CI).
use crate::{agent_job_support, common, github_fake, github_support, sandbox};

use std::future::Future;

use agent_job_support::{
    allow_git_host, basic_auth, create, finished, get_job, make_repo, private_git_host,
    result_files, script_agent, wait_for,
};
use common::{assert_error, git, Backend};
use github_fake::Account;
use github_support::{sign_in, Ctx};
use serde_json::{json, Value};

on_both_backends!(
    super::with_sandboxes;
    the_github_sign_in_token_clones_private_repositories,
);

/// [`github_support::run`], when sandboxes can run here.
async fn with_sandboxes<Fut: Future<Output = ()>>(
    backend: Backend,
    scenario: impl FnOnce(Ctx) -> Fut,
) {
    if sandbox::prerequisites() {
        github_support::run(backend, scenario).await;
    }
}

async fn the_github_sign_in_token_clones_private_repositories(ctx: Ctx) {
    let repos = tempfile::tempdir().expect("tempdir");
    make_repo(
        &repos.path().join("private"),
        "echo 'from a private repo' > found.txt\n",
    );
    git(
        repos.path(),
        &["clone", "-q", "--bare", "private", "private.git"],
    );
    let bare = repos.path().join("private.git");
    git(&bare, &["update-server-info"]);
    // Nobody's token yet: GitHub issues it at the sign-in below.
    let host = private_git_host(bare, "no-token-issued-yet").await;
    let agent = sandbox::agent_binary();
    let git_host = host.base.clone();
    let s = ctx
        .server_with(move |c| {
            c.runtime.agent_binary = Some(agent);
            script_agent(c);
            allow_git_host(c, &git_host);
            c.agent_jobs.git_host = git_host;
        })
        .await;
    assert_eq!(s.kiln.sessions.unavailable_reason(), None);
    sandbox::install_test_sample(&s).await;

    let (status, signed_in) = sign_in(&s, &ctx.gh, &Account::new(583231, "octocat")).await;
    assert_eq!(status, 200, "{signed_in}");
    let user_id = signed_in["user_id"].as_str().expect("user_id");
    let access = signed_in["access_token"]
        .as_str()
        .expect("access_token")
        .to_string();
    let issued = ctx.gh.issued_tokens();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let token = issued[0].clone();
    let stored = s
        .store()
        .await
        .get_github_token(user_id)
        .await
        .expect("store")
        .expect("the sign-in stored the token");
    assert!(!stored.contains(&token), "stored sealed, not in the clear");
    host.accept(&token);

    let run = |key: String| {
        let s = &s;
        async move {
            let (status, job) = create(
                s,
                &key,
                json!({"repo": "org/private", "agent_id": "script"}),
            )
            .await;
            assert_eq!(status, 202, "{job}");
            let id = job["job_id"].as_str().expect("job_id").to_string();
            wait_for(s, &key, &id, finished).await
        }
    };

    let job = run(access.clone()).await;
    assert_eq!(job["status"], "completed", "{job}");
    let id = job["job_id"].as_str().expect("job_id");
    let files = result_files(&s, &access, id).await;
    assert!(
        files["diff.patch"].contains("+from a private repo"),
        "{files:?}"
    );
    let expected = basic_auth(&token);
    assert!(
        host.seen
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, sent)| sent.as_deref() == Some(expected.as_str())),
        "git sent the signed-in user's GitHub token"
    );
    assert_token_hidden(&job, &token);

    // A user who never signed in with GitHub: no token is sent, and the error says what
    // would let Kiln in.
    let before = host.seen.lock().expect("lock").len();
    let (_, bob) = s.user("bob").await;
    let job = run(bob.clone()).await;
    assert_eq!(job["status"], "error", "{job}");
    let error = job["error"].as_str().expect("error");
    assert!(
        error.contains("cannot clone") && error.contains("sign in with GitHub"),
        "{job}"
    );
    let sent: Vec<_> = host.seen.lock().expect("lock")[before..].to_vec();
    assert!(
        !sent.is_empty() && sent.iter().all(|(_, auth)| auth.is_none()),
        "{sent:?}"
    );
    assert_token_hidden(&job, &token);
    // Bob's job ran with nobody's token, and octocat's job stays octocat's.
    let (status, body) = get_job(&s, &bob, id).await;
    assert_error(status, &body, 404, "not_found");
}

fn assert_token_hidden(job: &Value, token: &str) {
    assert!(
        !job.to_string().contains(token),
        "the token never shows: {job}"
    );
}
