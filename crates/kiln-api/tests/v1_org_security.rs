//! Org security over real HTTP (SQLite; PostgreSQL in scripts/test.sh's second pass): an
//! invitation needs a verified address; sudo re-verifies the password (and a second
//! factor) before destructive routes; an org's IP allowlist binds its API keys; the
//! default org can be changed.
use crate::common;

use reqwest::Method;
use serde_json::{json, Value};

use common::{assert_error, bearer, TestServer};

async fn call(
    s: &TestServer,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    s.v1_call(key, None, method, path, body).await
}

async fn get(s: &TestServer, key: &str, path: &str) -> (u16, Value) {
    call(s, Some(key), Method::GET, path, None).await
}

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(s, Some(key), Method::POST, path, Some(body)).await
}

/// A server whose password hashing is cheap (the tests sign up and in often).
async fn start(tweak: impl FnOnce(&mut kiln_config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.accounts.argon2_memory_kib = 256;
        c.accounts.argon2_iterations = 1;
        tweak(c);
    })
    .await
}

/// Signs up (unverified) and returns the access token.
async fn signup(s: &TestServer, email: &str, password: &str) -> String {
    let (status, body) = call(
        s,
        None,
        Method::POST,
        "/auth/signup",
        Some(json!({"email": email, "password": password, "name": "Someone"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["access_token"].as_str().expect("token").to_string()
}

/// The token of the newest mail to `to` whose link contains `kind` (from the outbox).
async fn mailed_token(s: &TestServer, to: &str, kind: &str) -> String {
    let links = s.kiln.accounts.pending_links(100).await.expect("links");
    let link = links
        .iter()
        .filter(|l| l.to.eq_ignore_ascii_case(to) && l.link.contains(kind))
        .max_by_key(|l| l.created_at)
        .unwrap_or_else(|| panic!("no {kind} mail to {to}: {links:?}"));
    let tail = link.link.rsplit(['/', '=']).next().expect("token");
    tail.to_string()
}

/// Someone who signed up with another person's address cannot take that person's
/// invitation (nor see it) until the address is verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_an_invitation_needs_a_verified_address() {
    let s = start(|_| {}).await;
    let (_, alice) = s.user("alice").await;
    let (status, body) = post(&s, &alice, "/orgs", json!({"name": "Acme", "slug": "acme"})).await;
    assert_eq!(status, 201, "{body}");
    let squatter = signup(&s, "victim@example.com", "a long enough password").await;
    let (status, body) = post(
        &s,
        &alice,
        "/orgs/acme/invitations",
        json!({"email": "victim@example.com", "role": "admin"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = mailed_token(&s, "victim@example.com", "/v1/auth/invitations/").await;

    let (status, inbox) = get(&s, &squatter, "/auth/invites/mine").await;
    assert_eq!(
        (status, inbox["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "an unverified address sees no invitation: {inbox}"
    );
    let accept = format!("/auth/invitations/{token}/accept");
    let (status, body) = post(&s, &squatter, &accept, json!({})).await;
    assert_error(status, &body, 403, "email_not_verified");
    let (status, members) = get(&s, &alice, "/orgs/acme/members").await;
    assert_eq!(
        (status, members["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{members}"
    );

    // Once the owner of the address follows the verification link, it works.
    let verify = mailed_token(&s, "victim@example.com", "verify-email").await;
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/verify-email?token={verify}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, inbox) = get(&s, &squatter, "/auth/invites/mine").await;
    assert_eq!(
        (status, inbox["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{inbox}"
    );
    let (status, body) = post(&s, &squatter, &accept, json!({})).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("admin")),
        "{body}"
    );
}

async fn sudo(s: &TestServer, token: &str, password: &str) -> (u16, Value) {
    post(s, token, "/auth/sudo", json!({"password": password})).await
}

async fn delete_me(s: &TestServer, token: &str, password: &str) -> (u16, Value) {
    call(
        s,
        Some(token),
        Method::DELETE,
        "/auth/me",
        Some(json!({"password": password})),
    )
    .await
}

/// Destructive routes need sudo from the very sign-in that calls them, and only for
/// `accounts.sudo_ttl_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sudo_is_required_granted_per_sign_in_and_expires() {
    const TTL: u64 = 3;
    let s = start(|c| c.accounts.sudo_ttl_secs = TTL).await;
    let password = "sue's long password";
    let a = signup(&s, "sue@example.com", password).await;
    let (status, body) = delete_me(&s, &a, password).await;
    assert_error(status, &body, 403, "sudo_required");
    let (status, body) = post(&s, &a, "/auth/sudo", json!({})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = sudo(&s, &a, "not the password").await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = delete_me(&s, &a, password).await;
    assert_error(status, &body, 403, "sudo_required");

    // A grant is the sign-in's: another sign-in of the same account has none.
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/login",
        Some(json!({"email": "sue@example.com", "password": password})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let b = body["access_token"].as_str().expect("token").to_string();
    let before = chrono::Utc::now();
    let (status, granted) = sudo(&s, &a, password).await;
    assert_eq!(status, 200, "{granted}");
    let until: chrono::DateTime<chrono::Utc> = granted["sudo_until"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("sudo_until: {granted}"));
    assert!(until > before && until <= chrono::Utc::now() + chrono::Duration::seconds(TTL as i64));
    let (status, body) = delete_me(&s, &b, password).await;
    assert_error(status, &body, 403, "sudo_required");

    // The grant ends after the window.
    tokio::time::sleep(std::time::Duration::from_millis(TTL * 1000 + 200)).await;
    let (status, body) = delete_me(&s, &a, password).await;
    assert_error(status, &body, 403, "sudo_required");
    let (status, body) = sudo(&s, &a, password).await;
    assert_eq!(status, 200, "{body}");
    // Each grant is in the audit log of the person's personal org.
    let (_, orgs) = get(&s, &a, "/orgs").await;
    let slug = orgs["items"][0]["slug"].as_str().expect("slug");
    let (status, page) = get(&s, &a, &format!("/orgs/{slug}/audit?action=auth.sudo")).await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{page}"
    );
    let (status, body) = delete_me(&s, &a, password).await;
    assert_eq!(status, 204, "{body}");
}

/// Wrong sudo passwords count with the sign-in failures: past the limit even the right
/// password is refused (429), at sudo and at sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sudo_passwords_are_rate_limited_like_sign_ins() {
    let s = start(|c| c.accounts.login_failures_per_account = 3).await;
    let password = "tom's long password";
    let a = signup(&s, "tom@example.com", password).await;
    for _ in 0..3 {
        let (status, body) = sudo(&s, &a, "guess guess guess").await;
        assert_error(status, &body, 401, "unauthorized");
    }
    let (status, body) = sudo(&s, &a, password).await;
    assert_error(status, &body, 429, "rate_limited");
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/login",
        Some(json!({"email": "tom@example.com", "password": password})),
    )
    .await;
    assert_error(status, &body, 429, "rate_limited");
}

/// Revoking an org key is destructive: a password account needs sudo for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_org_key_needs_sudo() {
    let s = start(|_| {}).await;
    let password = "ola's long password";
    let a = signup(&s, "ola@example.com", password).await;
    let (status, body) = post(&s, &a, "/orgs", json!({"name": "Ola", "slug": "ola-labs"})).await;
    assert_eq!(status, 201, "{body}");
    let mut paths = Vec::new();
    for name in ["ci", "nightly"] {
        let (status, key) = post(&s, &a, "/orgs/ola-labs/api-keys", json!({"name": name})).await;
        assert_eq!(status, 201, "{key}");
        paths.push(format!(
            "/orgs/ola-labs/api-keys/{}",
            key["id"].as_str().expect("id")
        ));
    }
    let (status, body) = call(&s, Some(&a), Method::DELETE, &paths[0], None).await;
    assert_error(status, &body, 403, "sudo_required");

    // An API key of the account holds a grant of its own, apart from the sign-in's.
    let (status, made) = s
        .post_as(&a, "/users/me/api-keys", &json!({"name": "laptop"}))
        .await;
    assert_eq!(status, 200, "{made}");
    let key = made["api_key"]["key"].as_str().expect("key").to_string();
    let (status, body) = call(&s, Some(&key), Method::DELETE, &paths[0], None).await;
    assert_error(status, &body, 403, "sudo_required");
    let (status, body) = sudo(&s, &key, password).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&s, Some(&a), Method::DELETE, &paths[0], None).await;
    assert_error(status, &body, 403, "sudo_required");
    let (status, body) = call(&s, Some(&key), Method::DELETE, &paths[0], None).await;
    assert_eq!(status, 204, "{body}");

    let (status, body) = sudo(&s, &a, password).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&s, Some(&a), Method::DELETE, &paths[1], None).await;
    assert_eq!(status, 204, "{body}");
}

/// Revoking a personal key (the Codeset route) of a password account needs sudo, except
/// for a key revoking itself; an account without a password is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_another_personal_key_needs_sudo_a_key_may_revoke_itself() {
    let s = start(|_| {}).await;
    let password = "pia's long password";
    let a = signup(&s, "pia@example.com", password).await;
    let mut keys = Vec::new();
    for name in ["laptop", "ci", "spare"] {
        let (status, made) = s
            .post_as(&a, "/users/me/api-keys", &json!({"name": name}))
            .await;
        assert_eq!(status, 200, "{made}");
        keys.push((
            made["api_key"]["key_id"].as_str().expect("id").to_string(),
            made["api_key"]["key"].as_str().expect("key").to_string(),
        ));
    }
    let revoke = |token: String, key_id: String| {
        let s = &s;
        async move {
            let response = s
                .delete("/users/me/api-keys")
                .header("Authorization", bearer(&token))
                .json(&json!({"key_id": key_id}))
                .send()
                .await
                .expect("send");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // A stolen token or key cannot revoke the owner's other keys...
    let (status, body) = revoke(a.clone(), keys[0].0.clone()).await;
    assert_error(status, &body, 403, "sudo_required");
    let (status, body) = revoke(keys[1].1.clone(), keys[0].0.clone()).await;
    assert_error(status, &body, 403, "sudo_required");
    // ...but a key may end itself.
    let (status, body) = revoke(keys[1].1.clone(), keys[1].0.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sudo(&s, &a, password).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = revoke(a.clone(), keys[0].0.clone()).await;
    assert_eq!(status, 200, "{body}");

    // The server's admin has no password sign-in: nothing to re-verify.
    let (status, made) = s
        .post_as(
            &s.admin_key,
            "/users/me/api-keys",
            &json!({"name": "other"}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let other = made["api_key"]["key_id"].as_str().expect("id").to_string();
    let (status, body) = revoke(s.admin_key.clone(), other).await;
    assert_eq!(status, 200, "{body}");
}

/// A client whose connections come from `source` (all of 127/8 is this machine).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(source.parse().expect("address")))
        .build()
        .expect("client")
}

/// `GET path` (under `/v1` or, with `api`, `/api/v1`) with `key`, from `source`.
async fn get_from(s: &TestServer, source: &str, key: &str, path: &str, api: bool) -> (u16, Value) {
    let root = s.base.trim_end_matches("/api/v1");
    let url = if api {
        format!("{root}/api/v1{path}")
    } else {
        format!("{root}/v1{path}")
    };
    let response = client_from(source)
        .get(url)
        .header("Authorization", bearer(key))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn put(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(s, Some(key), Method::PUT, path, Some(body)).await
}

/// An org's IP allowlist binds its API keys (on `/v1` and `/api/v1`), not its members'
/// own keys; only owners and admins manage it; bad input is a 422 naming the entry; every
/// change is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_keys_are_bound_to_the_ip_allowlist() {
    let s = start(|c| c.orgs.max_ip_allowlist_entries = 3).await;
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let (status, body) = post(&s, &alice, "/orgs", json!({"name": "Acme", "slug": "acme"})).await;
    assert_eq!(status, 201, "{body}");
    let (status, created) = post(&s, &alice, "/orgs/acme/api-keys", json!({"name": "ci"})).await;
    assert_eq!(status, 201, "{created}");
    let org_key = created["key"].as_str().expect("secret").to_string();
    let (status, body) = post(
        &s,
        &alice,
        "/orgs/acme/invitations",
        json!({"email": "bob@example.com", "role": "member"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let token = mailed_token(&s, "bob@example.com", "/v1/auth/invitations/").await;
    let (status, body) = post(
        &s,
        &bob,
        &format!("/auth/invitations/{token}/accept"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Empty: anywhere.
    let (status, list) = get(&s, &alice, "/orgs/acme/ip-allowlist").await;
    assert_eq!(
        (status, list["items"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );
    for source in ["127.0.0.2", "127.0.0.3"] {
        let (status, body) = get_from(&s, source, &org_key, "/orgs/current", false).await;
        assert_eq!(status, 200, "{body}");
    }

    // Only owners and admins; invalid networks and too many entries are 422s.
    let one = json!({"entries": [{"cidr": "127.0.0.2", "note": "build box"}]});
    let (status, body) = put(&s, &bob, "/orgs/acme/ip-allowlist", one.clone()).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = get(&s, &bob, "/orgs/acme/ip-allowlist").await;
    assert_error(status, &body, 403, "forbidden");
    let bad = json!({"entries": [{"cidr": "10.0.0.0/8"}, {"cidr": "10.0.0.0/33"}]});
    let (status, body) = put(&s, &alice, "/orgs/acme/ip-allowlist", bad).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "entries", 1, "cidr"]),
        "{body}"
    );
    let many: Vec<Value> = (1..=4)
        .map(|i| json!({"cidr": format!("10.0.0.{i}")}))
        .collect();
    let (status, body) = put(
        &s,
        &alice,
        "/orgs/acme/ip-allowlist",
        json!({"entries": many}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["type"], "too_long", "{body}");
    let (status, body) = put(
        &s,
        &alice,
        "/orgs/acme/ip-allowlist",
        json!({"entries": "x"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    let (status, list) = put(&s, &alice, "/orgs/acme/ip-allowlist", one).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        (
            list["items"][0]["cidr"].as_str(),
            list["items"][0]["note"].as_str()
        ),
        (Some("127.0.0.2/32"), Some("build box")),
        "{list}"
    );

    // The org key works from 127.0.0.2 only, on both APIs; personal keys are not bound.
    let (status, body) = get_from(&s, "127.0.0.2", &org_key, "/orgs/current", false).await;
    assert_eq!(
        (status, body["slug"].as_str()),
        (200, Some("acme")),
        "{body}"
    );
    let (status, body) = get_from(&s, "127.0.0.3", &org_key, "/orgs/current", false).await;
    assert_error(status, &body, 403, "ip_not_allowed");
    let (status, body) = get_from(&s, "127.0.0.3", &org_key, "/users/me", true).await;
    assert_error(status, &body, 403, "ip_not_allowed");
    let (status, body) = get_from(&s, "127.0.0.2", &org_key, "/users/me", true).await;
    assert_eq!(status, 200, "{body}");
    let root = s.base.trim_end_matches("/api/v1");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let response = client_from("127.0.0.3")
        .post(format!("{root}/mcp"))
        .header("Authorization", bearer(&org_key))
        .header("Accept", "application/json, text/event-stream")
        .json(&initialize)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON");
    assert_error(status, &body, 403, "ip_not_allowed");
    let (status, body) = get_from(&s, "127.0.0.3", &alice, "/users/me", true).await;
    assert_eq!(status, 200, "{body}");

    // `me` is the org the request acts in (the org key's here).
    let (status, body) = get_from(&s, "127.0.0.2", &org_key, "/orgs/me/ip-allowlist", false).await;
    assert_eq!(
        (status, body["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{body}"
    );

    // Entries one at a time: added, listed once, removed.
    let three = json!({"cidr": "127.0.0.3/32"});
    let (status, entry) = post(&s, &alice, "/orgs/acme/ip-allowlist", three.clone()).await;
    assert_eq!(status, 201, "{entry}");
    let (status, body) = post(&s, &alice, "/orgs/acme/ip-allowlist", three).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = get_from(&s, "127.0.0.3", &org_key, "/orgs/current", false).await;
    assert_eq!(status, 200, "{body}");
    let entry_path = format!(
        "/orgs/acme/ip-allowlist/{}",
        entry["id"].as_str().expect("id")
    );
    let (status, _) = call(&s, Some(&alice), Method::DELETE, &entry_path, None).await;
    assert_eq!(status, 204);
    let (status, body) = get_from(&s, "127.0.0.3", &org_key, "/orgs/current", false).await;
    assert_error(status, &body, 403, "ip_not_allowed");
    let (status, body) = call(&s, Some(&alice), Method::DELETE, &entry_path, None).await;
    assert_error(status, &body, 404, "not_found");

    // Cleared: anywhere again.
    let (status, body) = put(
        &s,
        &alice,
        "/orgs/acme/ip-allowlist",
        json!({"entries": []}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_from(&s, "127.0.0.3", &org_key, "/orgs/current", false).await;
    assert_eq!(status, 200, "{body}");

    let (status, page) = get(&s, &alice, "/orgs/acme/audit?limit=200").await;
    assert_eq!(status, 200, "{page}");
    let mut actions: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("org.ip_allowlist"))
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "org.ip_allowlist_added",
            "org.ip_allowlist_removed",
            "org.ip_allowlist_set",
            "org.ip_allowlist_set"
        ]
    );
}

/// The default org is where requests act without an org key or `X-Org-Slug`; a member
/// can move it, a non-member gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_org_can_be_changed() {
    let s = start(|_| {}).await;
    let (_, alice) = s.user("alice").await;
    let (_, eve) = s.user("eve").await;
    let (status, body) = post(&s, &alice, "/orgs", json!({"name": "Acme", "slug": "acme"})).await;
    assert_eq!(status, 201, "{body}");
    let (_, current) = get(&s, &alice, "/orgs/current").await;
    let personal = current["slug"].as_str().expect("slug").to_string();
    assert_eq!(current["personal"], true, "{current}");

    let (status, body) = post(&s, &alice, "/orgs/acme/default", json!({})).await;
    assert_eq!(
        (status, body["is_default"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (_, current) = get(&s, &alice, "/orgs/current").await;
    assert_eq!(current["slug"], "acme", "{current}");
    let (_, listed) = get(&s, &alice, "/orgs").await;
    let defaults: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|o| o["is_default"] == true)
        .filter_map(|o| o["slug"].as_str())
        .collect();
    assert_eq!(defaults, ["acme"], "{listed}");

    let (status, body) = post(&s, &eve, "/orgs/acme/default", json!({})).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = post(&s, &alice, &format!("/orgs/{personal}/default"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, current) = get(&s, &alice, "/orgs/current").await;
    assert_eq!(
        current["slug"].as_str(),
        Some(personal.as_str()),
        "{current}"
    );
}
