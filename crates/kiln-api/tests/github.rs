//! GitHub sign-in and `/repos`, against a real Kiln server and a local stand-in for GitHub
//! (`github_fake`). Every scenario runs on SQLite and on PostgreSQL (a fresh database from
//! `KILN_TEST_POSTGRES_URL`; skipped without it, except in CI).
use crate::{common, github_fake, github_support};

use std::time::{Duration, Instant};

use common::{assert_error, bearer, json, Backend};
use github_fake::Account;
use github_support::{me, post_sign_in, repos, sign_in, state, Ctx, REDIRECT};
use kiln_config::{GithubConfig, Secret};
use serde_json::{json, Value};
use sqlx::Connection;

on_both_backends!(
    crate::github_support::run;
    new_user_signs_in_and_tokens_work,
    returning_user_keeps_their_id_and_gets_a_new_login,
    null_email_is_read_from_user_emails,
    bad_states_are_refused_before_github_is_called,
    expired_state_is_refused,
    bad_code_is_401_and_wrong_app_credentials_502,
    github_down_or_hung_is_502,
    not_configured_is_a_clear_error_and_api_keys_still_work,
    repos_lists_every_page,
    stored_token_is_sealed,
    token_sealed_under_another_secret_asks_for_a_new_sign_in,
);

async fn new_user_signs_in_and_tokens_work(ctx: Ctx) {
    let s = ctx.server().await;
    let octo = Account::new(583231, "octocat");
    let (status, body) = sign_in(&s, &ctx.gh, &octo).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["is_new_user"], true);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 15 * 60);
    let user_id = body["user_id"].as_str().expect("user_id").to_string();
    assert_eq!(
        ctx.gh.state.redirect_uris.lock().expect("lock").as_slice(),
        &[Some(REDIRECT.to_string())],
        "the code is exchanged with the redirect_uri of the authorize step"
    );

    let access = body["access_token"].as_str().expect("access");
    let (status, user) = me(&s, access).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["user_id"], user_id.as_str());
    assert_eq!(user["github_id"], "583231");
    assert_eq!(user["github_login"], "octocat");
    assert_eq!(user["name"], "octocat (name)");
    assert_eq!(user["email"], "octocat@example.com");
    assert!(user["last_login_at"].is_string(), "{user}");

    // The pair is the one the rest of auth issues: it refreshes, and a reuse after
    // rotation revokes the family (the API-key path is covered in tests/api.rs).
    let refresh1 = body["refresh_token"].as_str().expect("refresh");
    let refresh = |token: &str| {
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": token}))
            .send()
    };
    let (status, next) = json(refresh(refresh1).await.expect("send")).await;
    assert_eq!(status, 200, "{next}");
    let refresh2 = next["refresh_token"]
        .as_str()
        .expect("refresh2")
        .to_string();
    let (status, body) = json(refresh(refresh1).await.expect("send")).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = json(refresh(&refresh2).await.expect("send")).await;
    assert_error(status, &body, 401, "unauthorized");
}

async fn returning_user_keeps_their_id_and_gets_a_new_login(ctx: Ctx) {
    let s = ctx.server().await;
    let mut octo = Account::new(1, "octocat");
    let (_, first) = sign_in(&s, &ctx.gh, &octo).await;
    assert_eq!(first["is_new_user"], true, "{first}");

    octo.login = "octocat-renamed".into();
    octo.name = None;
    let (status, second) = sign_in(&s, &ctx.gh, &octo).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["is_new_user"], false);
    assert_eq!(second["user_id"], first["user_id"]);
    let (_, user) = me(&s, second["access_token"].as_str().expect("access")).await;
    assert_eq!(user["github_login"], "octocat-renamed");
    assert_eq!(
        user["name"], "octocat-renamed",
        "no name on GitHub: the login"
    );

    // Another GitHub account is another Kiln user.
    let (_, other) = sign_in(&s, &ctx.gh, &Account::new(2, "hubot")).await;
    assert_eq!(other["is_new_user"], true);
    assert_ne!(other["user_id"], first["user_id"]);
}

async fn null_email_is_read_from_user_emails(ctx: Ctx) {
    let s = ctx.server().await;
    let mut private = Account::new(7, "private");
    private.email = None;
    private.emails = vec![
        ("old@example.com".into(), false, true),
        ("unverified@example.com".into(), true, false),
        ("main@example.com".into(), true, true),
    ];
    let (status, body) = sign_in(&s, &ctx.gh, &private).await;
    assert_eq!(status, 200, "{body}");
    let (_, user) = me(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(user["email"], "main@example.com");

    // No verified primary address at all: GitHub's no-reply address.
    let mut hidden = Account::new(8, "hidden");
    hidden.email = None;
    hidden.emails = vec![("unverified@example.com".into(), true, false)];
    let (_, body) = sign_in(&s, &ctx.gh, &hidden).await;
    let (_, user) = me(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(user["email"], "8+hidden@users.noreply.github.com");

    // A token without the user:email scope cannot read the list: the same fallback.
    let mut unscoped = Account::new(13, "unscoped");
    unscoped.email = None;
    unscoped.email_scope = false;
    let (status, body) = sign_in(&s, &ctx.gh, &unscoped).await;
    assert_eq!(status, 200, "{body}");
    let (_, user) = me(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(user["email"], "13+unscoped@users.noreply.github.com");
}

async fn bad_states_are_refused_before_github_is_called(ctx: Ctx) {
    let s = ctx.server().await;
    let elsewhere = ctx.server().await;
    let foreign = state(&elsewhere, REDIRECT).await;
    let mine = state(&s, REDIRECT).await;
    let code = ctx.gh.code_for(&Account::new(3, "victim"));
    let mut forged = mine.clone();
    forged.replace_range(..2, if mine.starts_with("AA") { "BB" } else { "AA" });
    let cases = [
        ("missing", json!({"code": code, "redirect_uri": REDIRECT})),
        (
            "null",
            json!({"code": code, "state": null, "redirect_uri": REDIRECT}),
        ),
        (
            "empty",
            json!({"code": code, "state": "", "redirect_uri": REDIRECT}),
        ),
        (
            "made up",
            json!({"code": code, "state": "abc.def", "redirect_uri": REDIRECT}),
        ),
        (
            "edited",
            json!({"code": code, "state": forged, "redirect_uri": REDIRECT}),
        ),
        (
            "another server's",
            json!({"code": code, "state": foreign, "redirect_uri": REDIRECT}),
        ),
        (
            "issued for another redirect_uri",
            json!({"code": code, "state": mine, "redirect_uri": "https://evil.example/cb"}),
        ),
        (
            "huge",
            json!({"code": code, "state": "A".repeat(10_000), "redirect_uri": REDIRECT}),
        ),
    ];
    for (what, body) in cases {
        let (status, answer) = post_sign_in(&s, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_error(status, &answer, 400, "invalid_state");
    }
    assert_eq!(
        ctx.gh.calls(),
        0,
        "GitHub must not be called for a bad state"
    );

    // The genuine state still works with the untouched code.
    let (status, body) = post_sign_in(
        &s,
        json!({"code": code, "state": mine, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Malformed bodies are 422s, not GitHub errors.
    let (status, body) = post_sign_in(&s, json!({"state": mine})).await;
    common::assert_validation(status, &body, &["body", "code"]);
}

async fn expired_state_is_refused(ctx: Ctx) {
    let s = ctx.server_with(|c| c.github.state_ttl_secs = 1).await;
    let state = state(&s, REDIRECT).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let code = ctx.gh.code_for(&Account::new(4, "late"));
    let (status, body) = post_sign_in(
        &s,
        json!({"code": code, "state": state, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_error(status, &body, 400, "invalid_state");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{body}"
    );
    assert_eq!(ctx.gh.calls(), 0);
}

async fn bad_code_is_401_and_wrong_app_credentials_502(ctx: Ctx) {
    let s = ctx.server().await;
    let state1 = state(&s, REDIRECT).await;
    let (status, body) = post_sign_in(
        &s,
        json!({"code": "not-a-code", "state": state1, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_error(status, &body, 401, "invalid_code");

    let wrong = ctx
        .server_with(|c| c.github.client_secret = Some(Secret::new("wrong")))
        .await;
    let state2 = state(&wrong, REDIRECT).await;
    let code = ctx.gh.code_for(&Account::new(5, "x"));
    let (status, body) = post_sign_in(
        &wrong,
        json!({"code": code, "state": state2, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_error(status, &body, 502, "github_unavailable");
    assert!(
        !body.to_string().contains("wrong"),
        "the secret is never echoed: {body}"
    );
}

async fn github_down_or_hung_is_502(ctx: Ctx) {
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let down = ctx
        .server_with(|c| {
            c.github.oauth_base = closed.clone();
            c.github.api_base = closed.clone();
        })
        .await;
    let st = state(&down, REDIRECT).await;
    let (status, body) = post_sign_in(
        &down,
        json!({"code": "c", "state": st, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_error(status, &body, 502, "github_unavailable");

    // A GitHub that accepts the connection and never answers: the deadline ends it.
    let hung = ctx.server_with(|c| c.github.timeout_secs = 1).await;
    ctx.gh
        .state
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let st = state(&hung, REDIRECT).await;
    let started = Instant::now();
    let (status, body) = post_sign_in(
        &hung,
        json!({"code": "c", "state": st, "redirect_uri": REDIRECT}),
    )
    .await;
    assert_error(status, &body, 502, "github_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

async fn not_configured_is_a_clear_error_and_api_keys_still_work(ctx: Ctx) {
    let s = ctx
        .server_with(|c| c.github = GithubConfig::default())
        .await;
    let (status, body) = post_sign_in(&s, json!({"code": "c", "state": "s"})).await;
    assert_error(status, &body, 503, "github_not_configured");
    let (status, body) = json(s.get("/auth/github/authorize").send().await.expect("send")).await;
    assert_error(status, &body, 503, "github_not_configured");

    // Password-less self-hosting: the admin's API key works, and so does a new user's.
    let (status, user) = me(&s, &s.admin_key).await;
    assert_eq!(status, 200, "{user}");
    let (_, key) = s.user("erin").await;
    let (status, user) = me(&s, &key).await;
    assert_eq!((status, user["github_id"].clone()), (200, Value::Null));
    let (status, body) = repos(&s, &key).await;
    assert_error(status, &body, 409, "github_not_linked");
    assert_eq!(ctx.gh.calls(), 0);
}

async fn repos_lists_every_page(ctx: Ctx) {
    let s = ctx.server().await;
    let mut many = Account::new(9, "many");
    many.repos = 250;
    let (_, body) = sign_in(&s, &ctx.gh, &many).await;
    let access = body["access_token"].as_str().expect("access");
    let (status, listed) = repos(&s, access).await;
    assert_eq!(status, 200, "{listed}");
    let repos_list = listed["repos"].as_array().expect("repos");
    assert_eq!(repos_list.len(), 250, "all three pages");
    assert_eq!(
        repos_list[0],
        json!({"full_name": "many/repo-0000", "private": false, "html_url": "https://github.com/many/repo-0000"})
    );
    assert_eq!(repos_list[249]["full_name"], "many/repo-0249");
    assert_eq!(repos_list[249]["private"], true);

    // Exactly a page's worth: the next page is empty and ends the listing.
    let mut hundred = Account::new(10, "hundred");
    hundred.repos = 100;
    let (_, body) = sign_in(&s, &ctx.gh, &hundred).await;
    let (_, listed) = repos(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(listed["repos"].as_array().map(Vec::len), Some(100));

    // The bound on pages holds.
    let bounded = ctx.server_with(|c| c.github.max_repo_pages = 2).await;
    let (_, body) = sign_in(&bounded, &ctx.gh, &many).await;
    let (_, listed) = repos(&bounded, body["access_token"].as_str().expect("access")).await;
    assert_eq!(listed["repos"].as_array().map(Vec::len), Some(200));

    // An API-key user without GitHub gets a clear 409, and no credentials get a 401.
    let (_, key) = s.user("keyonly").await;
    let (status, body) = repos(&s, &key).await;
    assert_error(status, &body, 409, "github_not_linked");
    let (status, body) = json(s.get("/repos").send().await.expect("send")).await;
    assert_error(status, &body, 401, "unauthorized");
}

async fn stored_token_is_sealed(ctx: Ctx) {
    let s = ctx.server().await;
    let (_, body) = sign_in(&s, &ctx.gh, &Account::new(11, "sealed")).await;
    let user_id = body["user_id"].as_str().expect("user_id");
    let tokens = ctx.gh.issued_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];

    let stored = s
        .store()
        .await
        .get_github_token(user_id)
        .await
        .expect("read")
        .expect("a token is stored");
    assert!(stored.starts_with("v1:"), "{stored}");
    assert!(!stored.contains(token.as_str()) && !stored.contains(&token[4..]));
    // The agent-jobs feature gets it back, opened.
    assert_eq!(
        s.kiln.github.github_token_for(user_id).await.expect("open"),
        Some(token.clone())
    );

    if ctx.backend == Backend::Sqlite {
        // The database file itself (and its WAL) never holds the token.
        let db = s.kiln.config.data_dir.join("kiln.db");
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open db");
        let raw: String =
            sqlx::query_scalar("SELECT sealed_token FROM github_tokens WHERE user_id = ?")
                .bind(user_id)
                .fetch_one(&mut conn)
                .await
                .expect("row");
        assert_eq!(raw, stored);
        for file in ["kiln.db", "kiln.db-wal"] {
            let path = s.kiln.config.data_dir.join(file);
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "{file} contains the token"
            );
        }
    }

    // A value stored before sealing existed still works.
    let legacy = "gho_legacyplaintexttoken";
    let mut account = Account::new(11, "sealed");
    account.repos = 2;
    ctx.gh.add_token(legacy, &account);
    s.store()
        .await
        .put_github_token(user_id, legacy, chrono::Utc::now())
        .await
        .expect("write");
    let (status, listed) = repos(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["repos"].as_array().map(Vec::len), Some(2));
}

async fn token_sealed_under_another_secret_asks_for_a_new_sign_in(ctx: Ctx) {
    let s = ctx
        .server_with(|c| {
            c.auth.jwt_secret = Some(Secret::new("first server secret, 32 bytes long"))
        })
        .await;
    let (_, body) = sign_in(&s, &ctx.gh, &Account::new(12, "moved")).await;
    let user_id = body["user_id"].as_str().expect("user_id").to_string();
    let (status, _) = repos(&s, body["access_token"].as_str().expect("access")).await;
    assert_eq!(status, 200);

    // The same data under a server with another secret: the sealed token is useless.
    let mut config = s.kiln.config.clone();
    config.auth.jwt_secret = Some(Secret::new("a different secret, also 32 bytes"));
    let other = kiln_services::Kiln::open(config).await.expect("open");
    let key = other
        .auth
        .create_api_key(&user_id, None)
        .await
        .expect("key");
    let other = std::sync::Arc::new(other);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/api/v1", listener.local_addr().expect("addr"));
    tokio::spawn(kiln_api::serve(
        other.clone(),
        listener,
        std::future::pending(),
    ));
    let (status, body) = json(
        reqwest::Client::new()
            .get(format!("{base}/repos"))
            .header("Authorization", bearer(&key.secret))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 409, "github_sign_in_again");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sign in with GitHub again")),
        "{body}"
    );
    let calls = ctx.gh.calls();
    assert!(other.github.github_token_for(&user_id).await.is_err());
    assert_eq!(ctx.gh.calls(), calls, "nothing was sent to GitHub");
}
