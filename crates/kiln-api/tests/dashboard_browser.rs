//! The dashboard (`/`) and the offline API reference (`/docs`) in a real headless
//! Chromium, against a real server with real sandboxes: sign in with a password, open a
//! sample, start a session, watch a command's output arrive live, browse files, verify
//! and read the FAIL_TO_PASS table, fork, close, create and revoke an API key, read the
//! ledger, render `/docs`. Chromium resolves no host name; every page must load only
//! from the server and log no console error. Screenshots go to
//! `target/dashboard-screenshots/`. Skips (saying why) without chromium/chromedriver or
//! sandbox prerequisites; fails without them when `KILN_REQUIRE_BROWSER=1` (CI).
use crate::{browser, common, dashboard_ui, sandbox};

use browser::Browser;
use common::{bearer, TestServer};
use serde_json::{json, Value};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn static_files_are_served_from_the_binary() {
    let s = TestServer::start().await;
    let root = s.base.replace("/api/v1", "");
    let http = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "/dashboard/app.js"),
        ("/dashboard/app.js", "text/javascript", "streamExec"),
        ("/dashboard/team.js", "text/javascript", "orgPage"),
        ("/dashboard/account.js", "text/javascript", "usageChart"),
        ("/dashboard/markdown.js", "text/javascript", "Markdown"),
        ("/dashboard/metrics.js", "text/javascript", "drawMetrics"),
        ("/dashboard/app.css", "text/css", "@media"),
        ("/docs", "text/html", "/api/v1/openapi.json"),
        ("/docs/v1", "text/html", "/v1/openapi.json"),
        ("/docs/redoc.standalone.js", "text/javascript", "Redoc"),
    ] {
        let r = http
            .get(format!("{root}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{path}: {csp}"
        );
        assert!(
            !csp.contains("http"),
            "{path} may load from elsewhere: {csp}"
        );
        let body = r.text().await.expect("body");
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(!body.contains("cdn.jsdelivr.net"), "{path} names a CDN");
    }
    let missing = http
        .get(format!("{root}/dashboard/nope.js"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["detail"]["code"], "not_found", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    if !browser::available() {
        return;
    }
    // The webhook page's endpoint is on loopback, which webhooks refuse unless allowed.
    let Some(s) = sandbox::start_if_possible(|c| {
        c.webhooks.allowed_internal_hosts = vec!["127.0.0.1:9".into()];
        // A usage sample a second, for the session page's usage line.
        c.billing.heartbeat_secs = 1;
    })
    .await
    else {
        return;
    };
    let root = s.base.replace("/api/v1", "");
    let signup = s
        .client
        .post(format!("{root}/v1/auth/signup"))
        .json(&json!({"email": EMAIL, "password": PASSWORD, "name": "Ada"}))
        .send()
        .await
        .expect("signup");
    assert_eq!(signup.status(), 201);
    let shots = kiln_test_support::workspace_root().join("target/dashboard-screenshots");
    let b = Browser::start(shots).await;

    // Sign in with e-mail and password.
    b.goto(&format!("{root}/")).await;
    b.type_into("#email", EMAIL).await;
    b.type_into("#password", PASSWORD).await;
    b.screenshot("01-sign-in").await;
    // Submitted from the keyboard (Enter in the password field), as a form should be.
    b.type_into("#password", &format!("{PASSWORD}\u{E007}"))
        .await;
    b.text_of("#live-count", "live").await;
    b.screenshot("02-sessions").await;
    dashboard_ui::cookie_sign_in(&b, EMAIL).await;

    // The sample, then a session of it.
    b.goto(&format!("{root}/#/samples")).await;
    b.text_of("#samples", sandbox::SAMPLE).await;
    b.screenshot("03-samples").await;
    dashboard_ui::markdown_statement(&b, &root, &s).await;
    b.goto(&format!(
        "{root}/#/sample/{}/{}",
        sandbox::DATASET,
        sandbox::SAMPLE
    ))
    .await;
    b.text_of("h1", sandbox::SAMPLE).await;
    b.screenshot("04-sample").await;
    b.click("#start-session").await;
    b.text_of("#session-status", "ready").await;
    let session = b
        .js("return location.hash.split('/')[2]", json!([]))
        .await
        .as_str()
        .expect("session id in the URL")
        .to_string();

    // A command whose first line must show before it ends: output arrives live. It also
    // writes the test script the sample's verification runs.
    b.type_into(
        "#command",
        "echo first-line; sleep 2; echo \"echo 'PASSED t1'\" > /testbed/run-tests.sh; echo second-line",
    )
    .await;
    b.click("form.inline button[type=submit]").await;
    b.text_of("#live-output", "first-line").await;
    let exit_then = b
        .js(
            "return document.querySelector('#exit-code').textContent",
            json!([]),
        )
        .await;
    assert_eq!(exit_then, "running…", "the first line came only at the end");
    b.text_of("#exit-code", "exit code 0").await;
    b.text_of("#live-output", "second-line").await;
    b.text_of("#timeline", "first-line").await;

    // The file tree and viewer.
    b.click("#file-tree button[data-path$='hello.txt']").await;
    b.text_of("#file-viewer", "hello from the image").await;
    b.text_of("#usage-now", "processes").await;
    b.screenshot("05-session").await;
    dashboard_ui::metrics_charts(&b).await;

    // Verification: the F2P/P2P table.
    b.click("#verify").await;
    b.text_of("#test-results", "FAIL_TO_PASS").await;
    b.text_of("#test-results", "t1").await;
    b.text_of("#resolution", "RESOLVED_FULL").await;
    b.screenshot("06-verification").await;
    search_and_verifications(&b, &root, &session).await;

    // Snapshot, fork, close the fork.
    b.goto(&format!("{root}/#/session/{session}")).await;
    b.text_of("#session-status", "ready").await;
    b.click("#snapshot").await;
    b.until(
        "a snapshot in the list",
        "return document.querySelector('#snapshots li:not(.muted)')",
        json!([]),
    )
    .await;
    b.click("#fork").await;
    let fork = b
        .until(
            "the fork's page",
            "const id = location.hash.split('/')[2]; return id && id !== arguments[0] ? id : null",
            json!([session]),
        )
        .await;
    let fork = fork.as_str().expect("fork id").to_string();
    b.text_of("#session-status", "ready").await;
    b.screenshot("07-fork").await;
    b.click("#close").await;
    b.text_of("#session-status", "closed").await;
    b.goto(&format!("{root}/#/sessions?status=closed")).await;
    b.text_of("#sessions", &fork).await;

    // API keys: created (shown once), works, revoked, refused.
    b.goto(&format!("{root}/#/keys")).await;
    b.type_into("#key-name", "browser-key").await;
    b.click("form.inline button[type=submit]").await;
    let secret = b.text_of("#new-key-secret", "kiln_").await;
    b.screenshot("08-keys").await;
    let me = s
        .client
        .get(format!("{root}/api/v1/users/me"))
        .header("Authorization", bearer(&secret))
        .send()
        .await
        .expect("send");
    assert_eq!(me.status(), 200);
    let forks_view: Value = s
        .client
        .get(format!("{root}/v1/instances/{fork}"))
        .header("Authorization", bearer(&secret))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(forks_view["status"], "closed", "{forks_view}");
    // Revoking a key of a password account needs sudo: the dashboard asks for the
    // password, then revokes (the grant then holds for the org key below).
    b.click("#keys button[aria-label='Revoke browser-key']")
        .await;
    b.type_into("#sudo-password", PASSWORD).await;
    b.click("#sudo-confirm").await;
    b.text_of("#status", "Key revoked").await;
    let refused = s
        .client
        .get(format!("{root}/api/v1/users/me"))
        .header("Authorization", bearer(&secret))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 401);

    // Usage, and the same pages on a phone-sized window.
    b.goto(&format!("{root}/#/usage")).await;
    b.text_of("#ledger", "session_usage").await;
    b.until(
        "the usage chart",
        "return document.querySelector('#usage-chart')",
        json!([]),
    )
    .await;
    b.screenshot("09-usage").await;
    dashboard_ui::deposit::deposit_form(&b).await;
    team_pages(&b, &root, &s.admin_key, &session).await;
    dashboard_ui::regrade::regrade_button(&b, &root).await;
    b.window_size(390, 844).await;
    b.goto(&format!("{root}/#/sessions")).await;
    b.text_of("#live-count", "live").await;
    b.screenshot("10-sessions-phone").await;
    b.window_size(1280, 900).await;
    dashboard_ui::mfa_sign_in(&b, &root, &s).await;
    assert_local(&b, &root).await;
    assert_no_console_errors(&b, "the dashboard").await;

    // The API reference, with nothing but this server reachable.
    b.goto(&format!("{root}/docs")).await;
    b.until(
        "Redoc's rendering of the Codeset API",
        "return document.body.innerText.includes('Kiln (Codeset API)') && document.querySelector('.api-content') ? true : null",
        json!([]),
    )
    .await;
    b.screenshot("11-docs").await;
    assert_local(&b, &root).await;
    assert_no_console_errors(&b, "/docs").await;
    b.goto(&format!("{root}/docs/v1")).await;
    b.until(
        "Redoc's rendering of the instance API",
        "return document.body.innerText.includes('Kiln (instances API)') && document.querySelector('.api-content') ? true : null",
        json!([]),
    )
    .await;
    b.screenshot("12-docs-v1").await;
    assert_local(&b, &root).await;
    assert_no_console_errors(&b, "/docs/v1").await;
}

/// The session list searched on the server as one types (the query kept in the URL across
/// a reload), and the session page's verifications, each linking to its result.
async fn search_and_verifications(b: &Browser, root: &str, session: &str) {
    b.goto(&format!("{root}/#/sessions")).await;
    b.text_of("#live-count", "live").await;
    b.type_into("#session-search", "no-such-session").await;
    b.text_of("#sessions", "No sessions.").await;
    let part = &session[session.len() - 8..].to_uppercase();
    b.type_into("#session-search", part).await;
    b.text_of("#live-count", "1 match").await;
    b.text_of("#sessions", session).await;
    let hash = b
        .until(
            "the search kept in the URL",
            "return location.hash.includes('q=' + encodeURIComponent(arguments[0])) && location.hash",
            json!([part]),
        )
        .await;
    // Loaded anew (another URL than the page's, the same hash).
    let hash = hash.as_str().expect("the hash");
    b.goto(&format!("{root}/?reloaded{hash}")).await;
    b.text_of("#sessions", session).await;
    let kept = b
        .js(
            "return document.querySelector('#session-search').value",
            json!([]),
        )
        .await;
    assert_eq!(kept, json!(part), "the search box after a reload");
    b.screenshot("06b-sessions-search").await;
    b.goto(&format!("{root}/#/session/{session}")).await;
    b.text_of("#verifications", "FAIL_TO_PASS 1 passed, 0 failed")
        .await;
    b.text_of("#verifications", "resolved").await;
    b.js(
        "document.querySelector('#verifications').scrollIntoView()",
        json!([]),
    )
    .await;
    b.screenshot("06c-session-verifications").await;
    b.click("#verifications a").await;
    b.text_of("#resolution", "RESOLVED_FULL").await;
}

/// The organization (members, an invitation, an org key), its audit log, a webhook and a
/// test delivery, the (empty) evaluation runs, and the nodes page as a member and as an
/// admin (alone on SQLite).
async fn team_pages(b: &Browser, root: &str, admin_key: &str, session: &str) {
    b.goto(&format!("{root}/#/org")).await;
    b.text_of("#members", EMAIL).await;
    b.type_into("#invite-email", "grace@example.com").await;
    b.click("#invite-form button[type=submit]").await;
    b.text_of("#invitations", "grace@example.com").await;
    b.type_into("#org-key-name", "team-key").await;
    b.click("#org-key-form button[type=submit]").await;
    b.text_of("#new-org-key-secret", "kiln_").await;
    b.text_of("#org-keys", "team-key").await;
    b.screenshot("10-organization").await;
    // Revoking an org key needs sudo too: granted at the keys page minutes ago, it holds.
    b.click("#org-keys button[aria-label='Revoke team-key']")
        .await;
    b.text_of("#status", "Key revoked").await;
    b.text_of("#org-keys", "revoked").await;
    // A team organization: created, switched to (X-Org-Slug), empty of the personal
    // org's sessions; then back to the personal one.
    b.type_into("#org-name", "Acme Lab").await;
    b.click("#org-form button[type=submit]").await;
    b.text_of("h1", "Organization Acme Lab").await;
    b.text_of("#org-name-nav", "acme").await;
    b.goto(&format!("{root}/#/sessions")).await;
    b.text_of("#live-count", "0 live").await;
    b.text_of("#sessions", "No sessions.").await;
    b.goto(&format!("{root}/#/org")).await;
    b.click("#orgs button[aria-label='Switch to Ada']").await;
    b.text_of("h1", "Organization Ada").await;
    b.goto(&format!("{root}/#/sessions")).await;
    b.text_of("#sessions", session).await;
    b.goto(&format!("{root}/#/audit")).await;
    b.text_of("#audit", "invitation.created").await;
    b.text_of("#audit", "api_key.created").await;
    b.screenshot("11-audit").await;

    b.goto(&format!("{root}/#/webhooks")).await;
    b.type_into("#webhook-url", "http://127.0.0.1:9/hook").await;
    b.click("#webhook-form button[type=submit]").await;
    b.text_of("#webhook-secret", "whsec_").await;
    b.click("#webhook-test").await;
    b.text_of("#deliveries", "webhook.test").await;
    let shown = b
        .js("return document.querySelector('main').innerText", json!([]))
        .await;
    let shown = shown.as_str().unwrap_or_default();
    assert!(
        !shown.contains("null") && !shown.contains("undefined"),
        "a missing value shown as text: {shown}"
    );
    b.screenshot("12-webhook").await;
    b.goto(&format!("{root}/#/webhooks")).await;
    b.text_of("#webhooks", "127.0.0.1:9/hook").await;

    b.goto(&format!("{root}/#/runs")).await;
    b.text_of("#runs", "No runs.").await;
    b.goto(&format!("{root}/#/nodes")).await;
    b.text_of("#nodes-admin-only", "administrator").await;
    // As an admin (the server's admin key, pasted as a user would), then back.
    b.js(
        "localStorage.setItem('kiln.token', arguments[0]); return null",
        json!([admin_key]),
    )
    .await;
    b.goto(&format!("{root}/#/runs")).await;
    b.text_of("#runs", "No runs.").await;
    b.goto(&format!("{root}/#/nodes")).await;
    b.text_of("#nodes-alone", "runs alone").await;
    b.screenshot("13-nodes").await;
    // Forgetting the key leaves the person's cookie sign-in.
    b.js(
        "localStorage.removeItem('kiln.token'); return null",
        json!([]),
    )
    .await;
}

async fn assert_local(b: &Browser, root: &str) {
    for url in b.requested_urls().await {
        assert!(
            url.starts_with(root) || url.starts_with("data:") || url.starts_with("blob:"),
            "the page requested {url}, not from {root}"
        );
    }
}

/// Answers the dashboard asks for and handles, which Chromium still logs as errors: the
/// nodes page shows a member's 403 and a lone server's 409; a destructive route's 403
/// `sudo_required` opens the password prompt.
const EXPECTED_REFUSALS: &[(&str, &str)] = &[
    ("/v1/admin/servers", "status of 403"),
    ("/v1/admin/servers", "status of 409"),
    ("/api-keys/", "status of 403"),
    ("/users/me/api-keys", "status of 403"),
    // A wrong second-factor code at sign-in, shown in the form.
    ("/auth/login/mfa", "status of 401"),
    // A deposit on a server without Stripe, shown in the usage page's form.
    ("/billing/deposit", "status of 503"),
];

async fn assert_no_console_errors(b: &Browser, page: &str) {
    let errors: Vec<Value> = b
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .filter(|e| {
            let text = e["message"].as_str().unwrap_or_default();
            !EXPECTED_REFUSALS
                .iter()
                .any(|(url, status)| text.contains(url) && text.contains(status))
        })
        .collect();
    assert!(errors.is_empty(), "console errors on {page}: {errors:?}");
}
