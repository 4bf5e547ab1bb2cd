//! Organizations over real HTTP (SQLite; PostgreSQL in scripts/test.sh's second pass): an
//! org with three members and roles, invitations (token read from the mail outbox) accepted,
//! refused when spent, revoked or expired; the last owner stays; org API keys act only in
//! their org; `X-Org-Slug` for a non-member is a 404; the org's sessions are its members'
//! (another org's are 404) and its balance is theirs, charged once per session (with real
//! sandboxes, when the host can run them); the audit log records each step.
use crate::{common, sandbox};

use reqwest::Method;
use serde_json::{json, Value};

use common::{assert_error, bearer, json as read_json, TestServer};

async fn call(
    s: &TestServer,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    org: Option<&str>,
) -> (u16, Value) {
    s.v1_call(key, org, method, path, body).await
}

async fn get(s: &TestServer, key: &str, path: &str) -> (u16, Value) {
    call(s, Some(key), Method::GET, path, None, None).await
}

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> (u16, Value) {
    call(s, Some(key), Method::POST, path, Some(body), None).await
}

/// The token of the newest invitation mailed to `to` (from the outbox: no SMTP here).
async fn invitation_token(s: &TestServer, to: &str) -> String {
    let links = s.kiln.accounts.pending_links(100).await.expect("links");
    let link = links
        .iter()
        .filter(|l| l.to == to && l.link.contains("/v1/auth/invitations/"))
        .max_by_key(|l| l.created_at)
        .unwrap_or_else(|| panic!("no invitation mailed to {to}: {links:?}"));
    link.link.rsplit('/').next().expect("token").to_string()
}

async fn invite(s: &TestServer, key: &str, org: &str, email: &str, role: &str) -> String {
    let (status, body) = post(
        s,
        key,
        &format!("/orgs/{org}/invitations"),
        json!({"email": email, "role": role}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["state"], "pending");
    assert!(
        body.get("token").is_none(),
        "the token is only in the mail: {body}"
    );
    invitation_token(s, email).await
}

async fn accept(s: &TestServer, key: &str, token: &str) -> (u16, Value) {
    post(
        s,
        key,
        &format!("/auth/invitations/{token}/accept"),
        json!({}),
    )
    .await
}

async fn set_role(s: &TestServer, key: &str, org: &str, user: &str, role: &str) -> (u16, Value) {
    call(
        s,
        Some(key),
        Method::PATCH,
        &format!("/orgs/{org}/members/{user}"),
        Some(json!({"role": role})),
        None,
    )
    .await
}

async fn remove(s: &TestServer, key: &str, org: &str, user: &str) -> (u16, Value) {
    call(
        s,
        Some(key),
        Method::DELETE,
        &format!("/orgs/{org}/members/{user}"),
        None,
        None,
    )
    .await
}

async fn create_org(s: &TestServer, key: &str, slug: &str) -> Value {
    let (status, body) = post(s, key, "/orgs", json!({"name": "Acme Labs", "slug": slug})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["role"].as_str(), body["personal"].as_bool()),
        (Some("owner"), Some(false))
    );
    body
}

/// Every audit event of the org, read page by page (`limit` per page).
async fn audit_all(s: &TestServer, key: &str, org: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/orgs/{org}/audit?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(s, key, &path).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
    panic!("the audit log does not end");
}

fn actions(events: &[Value]) -> Vec<String> {
    let mut all: Vec<String> = events
        .iter()
        .map(|e| e["action"].as_str().expect("action").to_string())
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_roles_invitations_and_audit() {
    let s = TestServer::start().await;
    let (alice_id, alice) = s.user("alice").await;
    let (bob_id, bob) = s.user("bob").await;
    let (carol_id, carol) = s.user("carol").await;
    let (_, dave) = s.user("dave").await;

    // Everyone starts in a personal org, their default.
    let (status, mine) = get(&s, &alice, "/orgs").await;
    assert_eq!(status, 200, "{mine}");
    let items = mine["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{mine}");
    assert_eq!(
        (
            items[0]["personal"].as_bool(),
            items[0]["is_default"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert_eq!(items[0]["role"], "owner");

    create_org(&s, &alice, "acme").await;
    let (status, body) = post(&s, &bob, "/orgs", json!({"name": "Other", "slug": "acme"})).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = post(
        &s,
        &bob,
        "/orgs",
        json!({"name": "Bad", "slug": "Not A Slug"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Invitations: bob as admin, carol as member; the token works once, for its address.
    let bob_token = invite(&s, &alice, "acme", "bob@example.com", "admin").await;
    let carol_token = invite(&s, &alice, "acme", "carol@example.com", "member").await;
    let (status, shown) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/invitations/{bob_token}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        (
            shown["org_slug"].as_str(),
            shown["role"].as_str(),
            shown["state"].as_str()
        ),
        (Some("acme"), Some("admin"), Some("pending"))
    );
    let (status, inbox) = get(&s, &bob, "/auth/invites/mine").await;
    assert_eq!(
        (status, inbox["items"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{inbox}"
    );
    let (status, body) = accept(&s, &carol, &bob_token).await;
    assert_error(status, &body, 404, "not_found");
    let (status, joined) = accept(&s, &bob, &bob_token).await;
    assert_eq!(
        (status, joined["role"].as_str()),
        (200, Some("admin")),
        "{joined}"
    );
    let (status, body) = accept(&s, &bob, &bob_token).await;
    assert_error(status, &body, 409, "invitation_not_pending");
    let (status, body) = accept(&s, &carol, &carol_token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &s,
        None,
        Method::GET,
        "/auth/invitations/not-a-token",
        None,
        None,
    )
    .await;
    assert_error(status, &body, 404, "not_found");

    // A revoked invitation cannot be accepted.
    let dave_token = invite(&s, &bob, "acme", "dave@example.com", "member").await;
    let (status, pending) = get(&s, &bob, "/orgs/acme/invitations").await;
    assert_eq!(status, 200, "{pending}");
    let dave_inv = pending["items"][0]["id"].as_str().expect("id").to_string();
    let (status, body) = call(
        &s,
        Some(&bob),
        Method::DELETE,
        &format!("/orgs/acme/invitations/{dave_inv}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = accept(&s, &dave, &dave_token).await;
    assert_error(status, &body, 409, "invitation_not_pending");

    // Three members; a non-member sees nothing of the org.
    let (status, members) = get(&s, &carol, "/orgs/acme/members").await;
    assert_eq!(
        (status, members["items"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{members}"
    );
    for path in ["/orgs/acme", "/orgs/acme/members", "/orgs/acme/audit"] {
        let (status, body) = get(&s, &dave, path).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = call(
        &s,
        Some(&dave),
        Method::GET,
        "/orgs/current",
        None,
        Some("acme"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = call(
        &s,
        Some(&carol),
        Method::GET,
        "/orgs/current",
        None,
        Some("acme"),
    )
    .await;
    assert_eq!(
        (status, body["slug"].as_str(), body["role"].as_str()),
        (200, Some("acme"), Some("member")),
        "{body}"
    );

    // Roles: a member changes nobody; an admin manages non-owners only.
    let (status, body) = set_role(&s, &carol, "acme", &bob_id, "member").await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = post(
        &s,
        &carol,
        "/orgs/acme/invitations",
        json!({"email": "x@example.com"}),
    )
    .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = get(&s, &carol, "/orgs/acme/audit").await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = set_role(&s, &bob, "acme", &carol_id, "admin").await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = set_role(&s, &bob, "acme", &alice_id, "member").await;
    assert_error(status, &body, 403, "forbidden");

    // The last owner can neither be demoted nor leave.
    let (status, body) = set_role(&s, &alice, "acme", &alice_id, "admin").await;
    assert_error(status, &body, 409, "last_owner");
    let (status, body) = remove(&s, &alice, "acme", &alice_id).await;
    assert_error(status, &body, 409, "last_owner");
    let (status, body) = set_role(&s, &alice, "acme", &bob_id, "owner").await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = remove(&s, &alice, "acme", &alice_id).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = get(&s, &alice, "/orgs/acme").await;
    assert_error(status, &body, 404, "not_found");

    // The audit log has every step, with actor and address; pages add up to the whole.
    let whole = audit_all(&s, &bob, "acme", 200).await;
    let paged = audit_all(&s, &bob, "acme", 2).await;
    assert_eq!(whole, paged);
    assert_eq!(
        actions(&whole),
        [
            "invitation.accepted",
            "invitation.accepted",
            "invitation.created",
            "invitation.created",
            "invitation.created",
            "invitation.revoked",
            "member.left",
            "member.role_changed",
            "member.role_changed",
            "org.created",
        ]
    );
    let created = whole
        .iter()
        .find(|e| e["action"] == "org.created")
        .expect("org.created");
    assert_eq!(created["actor_id"].as_str(), Some(alice_id.as_str()));
    assert_eq!(created["ip_address"], "127.0.0.1");
    let (status, page) = get(&s, &bob, "/orgs/acme/audit?action=invitation.accepted").await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{page}"
    );
    let (status, page) = get(&s, &bob, &format!("/orgs/acme/audit?actor_id={bob_id}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["actor_id"] == bob_id.as_str()));
    let (status, body) = get(&s, &bob, "/orgs/acme/audit?since=yesterday").await;
    assert_eq!(status, 422, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invitations_are_refused() {
    let s = TestServer::start_with(|c| c.orgs.invitation_ttl_secs = 1).await;
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    create_org(&s, &alice, "acme").await;
    let token = invite(&s, &alice, "acme", "bob@example.com", "member").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = accept(&s, &bob, &token).await;
    assert_error(status, &body, 409, "invitation_not_pending");
    let (status, shown) = call(
        &s,
        None,
        Method::GET,
        &format!("/auth/invitations/{token}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, shown["state"].as_str()),
        (200, Some("expired")),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_keys_act_only_in_their_org() {
    let s = TestServer::start().await;
    let (_, alice) = s.user("alice").await;
    let (bob_id, bob) = s.user("bob").await;
    create_org(&s, &alice, "acme").await;
    let (_, personal) = get(&s, &alice, "/orgs/current").await;
    let personal_slug = personal["slug"].as_str().expect("slug").to_string();
    assert_eq!(personal["personal"], true);

    let (status, created) = post(&s, &alice, "/orgs/acme/api-keys", json!({"name": "ci"})).await;
    assert_eq!(status, 201, "{created}");
    let org_key = created["key"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    let key_id = created["id"].as_str().expect("id").to_string();
    let (status, listed) = get(&s, &alice, "/orgs/acme/api-keys").await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed["items"][0].get("key").is_none() && !listed.to_string().contains(&org_key));

    // The org key acts in acme, whatever else is asked; the personal key where it is told.
    let (status, current) = get(&s, &org_key, "/orgs/current").await;
    assert_eq!(
        (status, current["slug"].as_str()),
        (200, Some("acme")),
        "{current}"
    );
    let (status, body) = call(
        &s,
        Some(&org_key),
        Method::GET,
        "/orgs/current",
        None,
        Some(&personal_slug),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    let (status, current) = call(
        &s,
        Some(&alice),
        Method::GET,
        "/orgs/current",
        None,
        Some("acme"),
    )
    .await;
    assert_eq!(
        (status, current["slug"].as_str()),
        (200, Some("acme")),
        "{current}"
    );
    // The Codeset API still takes it.
    let (status, body) = s.get_as(&org_key, "/datasets").await;
    assert_eq!(status, 200, "{body}");

    // Outsiders cannot see or make the org's keys.
    let (status, body) = get(&s, &bob, "/orgs/acme/api-keys").await;
    assert_error(status, &body, 404, "not_found");

    // A removed member's org keys stop at once.
    let token = invite(&s, &alice, "acme", "bob@example.com", "admin").await;
    assert_eq!(accept(&s, &bob, &token).await.0, 200);
    let (status, bobs) = post(&s, &bob, "/orgs/acme/api-keys", json!({})).await;
    assert_eq!(status, 201, "{bobs}");
    let bobs_key = bobs["key"].as_str().expect("key").to_string();
    assert_eq!(get(&s, &bobs_key, "/orgs/current").await.0, 200);
    assert_eq!(remove(&s, &alice, "acme", &bob_id).await.0, 204);
    let (status, body) = get(&s, &bobs_key, "/orgs/current").await;
    assert_error(status, &body, 401, "unauthorized");

    // Revoked: 401 everywhere.
    let (status, body) = call(
        &s,
        Some(&alice),
        Method::DELETE,
        &format!("/orgs/acme/api-keys/{key_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = get(&s, &org_key, "/orgs/current").await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = call(
        &s,
        Some(&alice),
        Method::DELETE,
        &format!("/orgs/acme/api-keys/{key_id}"),
        None,
        None,
    )
    .await;
    assert_error(status, &body, 404, "not_found");

    let all = audit_all(&s, &alice, "acme", 50).await;
    let acts = actions(&all);
    for want in ["api_key.created", "api_key.revoked", "member.removed"] {
        assert!(
            acts.iter().any(|a| a == want),
            "{want} missing from {acts:?}"
        );
    }
    assert_eq!(acts.iter().filter(|a| *a == "api_key.created").count(), 2);
}

/// An org key for `user` (made a member of `org` by `owner` first, unless it is the owner).
async fn member_key(s: &TestServer, owner: &str, org: &str, user: Option<(&str, &str)>) -> String {
    let key = match user {
        Some((email, personal)) => {
            let token = invite(s, owner, org, email, "admin").await;
            assert_eq!(accept(s, personal, &token).await.0, 200);
            personal.to_string()
        }
        None => owner.to_string(),
    };
    let (status, created) = post(s, &key, &format!("/orgs/{org}/api-keys"), json!({})).await;
    assert_eq!(status, 201, "{created}");
    created["key"].as_str().expect("key").to_string()
}

async fn org_account(s: &TestServer, slug: &str) -> String {
    let store = s.store().await;
    let org = store.find_org(slug).await.expect("find").expect("org");
    org.account_user_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balance_is_the_orgs() {
    let s = TestServer::start().await;
    let (alice_id, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    create_org(&s, &alice, "acme").await;
    let alice_org = member_key(&s, &alice, "acme", None).await;
    let bob_org = member_key(&s, &alice, "acme", Some(("bob@example.com", &bob))).await;
    s.kiln
        .billing
        .grant(&org_account(&s, "acme").await, 700, None)
        .await
        .expect("grant");
    s.kiln
        .billing
        .grant(&alice_id, 5, None)
        .await
        .expect("grant");
    for key in [&alice_org, &bob_org] {
        let balance = s.get_ok(key, "/billing/balance").await;
        assert_eq!(balance["balance"].as_i64(), Some(700), "{balance}");
    }
    // Personal keys act in the personal org, X-Org-Slug in the named one.
    let balance = s.get_ok(&alice, "/billing/balance").await;
    assert_eq!(balance["balance"].as_i64(), Some(5), "{balance}");
    let pinned = s
        .get("/billing/balance")
        .header("Authorization", bearer(&bob))
        .header("X-Org-Slug", "acme");
    let (status, balance) = read_json(pinned.send().await.expect("send")).await;
    assert_eq!(
        (status, balance["balance"].as_i64()),
        (200, Some(700)),
        "{balance}"
    );

    // The org's own routes: any member sees the balance, owners and admins the ledger.
    let (_, carol) = s.user("carol").await;
    let token = invite(&s, &alice, "acme", "carol@example.com", "member").await;
    assert_eq!(accept(&s, &carol, &token).await.0, 200);
    let (_, dave) = s.user("dave").await;
    for key in [&alice, &bob, &carol, &alice_org] {
        let (status, body) = get(&s, key, "/orgs/acme/balance").await;
        assert_eq!(
            (status, &body["balance_cents"]),
            (200, &json!(700)),
            "{body}"
        );
        assert_eq!(body["slug"], "acme", "{body}");
    }
    let (status, body) = get(&s, &alice_org, "/orgs/me/balance").await;
    assert_eq!(
        (status, &body["balance_cents"]),
        (200, &json!(700)),
        "{body}"
    );
    let (status, body) = get(&s, &alice, "/orgs/me/balance").await;
    assert_eq!((status, &body["balance_cents"]), (200, &json!(5)), "{body}");
    let (status, body) = get(&s, &dave, "/orgs/acme/balance").await;
    assert_error(status, &body, 404, "not_found");
    for key in [&alice, &bob] {
        let (status, ledger) = get(&s, key, "/orgs/acme/transactions").await;
        assert_eq!(status, 200, "{ledger}");
        assert_eq!(ledger["total_items"], 1, "{ledger}");
        assert_eq!(ledger["items"][0]["amount_cents"], 700, "{ledger}");
        assert_eq!(ledger["has_next"], false, "{ledger}");
    }
    let (status, body) = get(&s, &carol, "/orgs/acme/transactions").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(&s, &dave, "/orgs/acme/transactions").await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = get(&s, &alice, "/orgs/acme/transactions?limit=0").await;
    assert_eq!(status, 422, "{body}");
}

/// A dataset private to an org: listed, searched, downloaded and started only by those
/// acting in that org; anonymous callers, personal orgs and outsiders see nothing of it
/// (a sample of it is as absent as a missing one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_dataset_is_seen_in_its_org_only() {
    let s = TestServer::start().await;
    let (_, alice) = s.user("alice").await;
    let (_, bob) = s.user("bob").await;
    let (_, dave) = s.user("dave").await;
    create_org(&s, &alice, "acme").await;
    let alice_org = member_key(&s, &alice, "acme", None).await;
    member_key(&s, &alice, "acme", Some(("bob@example.com", &bob))).await;
    let record = json!({"instance_id": "secret-1", "repo": "acme/secret",
        "base_commit": "0000000000000000000000000000000000000000",
        "problem_statement": "Fix the secret.", "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": []})
    .to_string();
    s.kiln
        .datasets
        .import(kiln_services::datasets::ImportRequest {
            dataset: "secret",
            description: None,
            version_description: None,
            text: &record,
            repos_dir: None,
        })
        .await
        .expect("import");
    let account = org_account(&s, "acme").await;
    s.kiln
        .datasets
        .set_owner("secret", Some(&account))
        .await
        .expect("private");

    let listing = |key: Option<&str>, slug: Option<&str>, path: &str| {
        let mut request = s.get(path);
        if let Some(key) = key {
            request = request.header("Authorization", bearer(key));
        }
        if let Some(slug) = slug {
            request = request.header("X-Org-Slug", slug);
        }
        request.send()
    };
    let sees = |body: &Value| body.to_string().contains("secret");
    for (key, slug, visible) in [
        (None, None, false),
        (Some(alice_org.as_str()), None, true),
        (Some(bob.as_str()), Some("acme"), true),
        (Some(bob.as_str()), None, false),
        (Some(dave.as_str()), None, false),
    ] {
        for path in ["/datasets", "/samples", "/samples?dataset=secret"] {
            let (status, body) = read_json(listing(key, slug, path).await.expect("send")).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(sees(&body), visible, "{key:?} {slug:?} {path}: {body}");
        }
    }
    let download = "/samples/secret/secret-1/download";
    let archive = listing(Some(&alice_org), None, download)
        .await
        .expect("send");
    assert_eq!(archive.status(), 200);
    for key in [&dave, &bob] {
        let (status, body) =
            read_json(listing(Some(key), None, download).await.expect("send")).await;
        assert_error(status, &body, 404, "not_found");
    }
    // Starting a session on it: the outsider's is refused as if it did not exist.
    let body = json!({"dataset": "secret", "sample_id": "secret-1"});
    let (status, refused) = s.post_as(&dave, "/sessions", &body).await;
    assert_error(status, &refused, 404, "not_found");
    let (status, other) = s.post_as(&alice_org, "/sessions", &body).await;
    assert_ne!(status, 404, "{other}");
}

/// The server's admin stays its admin while acting in a team org (admin routes check the
/// person, not the org's account); a member who is no admin is refused either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_acting_in_a_team_org_is_still_the_admin() {
    let s = TestServer::start().await;
    let admin = s.admin_key.clone();
    let (_, bob) = s.user("bob").await;
    create_org(&s, &admin, "ops").await;
    let token = invite(&s, &admin, "ops", "bob@example.com", "admin").await;
    assert_eq!(accept(&s, &bob, &token).await.0, 200);
    let servers = |key: &str, slug: Option<&str>| {
        let mut request = s
            .v1(Method::GET, "/admin/servers")
            .header("Authorization", bearer(key));
        if let Some(slug) = slug {
            request = request.header("X-Org-Slug", slug);
        }
        request.send()
    };
    let (alone, _) = read_json(servers(&admin, None).await.expect("send")).await;
    assert_ne!(alone, 403, "the admin is refused outside any org");
    let (status, body) = read_json(servers(&admin, Some("ops")).await.expect("send")).await;
    assert_eq!(
        status, alone,
        "acting in a team org changes the admin's answer: {body}"
    );
    for slug in [None, Some("ops")] {
        let (status, body) = read_json(servers(&bob, slug).await.expect("send")).await;
        assert_eq!(status, 403, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_the_orgs_and_charged_once() {
    let Some(s) = sandbox::start_if_possible(|c| c.billing.enabled = true).await else {
        return;
    };
    let (alice_id, alice) = s.user("alice").await;
    let (bob_id, bob) = s.user("bob").await;
    let (_, dave) = s.user("dave").await;
    create_org(&s, &alice, "acme").await;
    let alice_org = member_key(&s, &alice, "acme", None).await;
    let bob_org = member_key(&s, &alice, "acme", Some(("bob@example.com", &bob))).await;
    s.kiln
        .billing
        .grant(&org_account(&s, "acme").await, 500, None)
        .await
        .expect("grant");

    let id = sandbox::create_ready(&s, &alice_org).await;
    // A member sees it; the same people outside the org (personal keys) and outsiders do not.
    let (status, seen) = s.get_as(&bob_org, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{seen}");
    for key in [&alice, &bob, &dave] {
        let (status, body) = s.get_as(key, &format!("/sessions/{id}")).await;
        assert_error(status, &body, 404, "not_found");
    }
    // Bob closes alice's session; the org is charged once.
    let (status, body) = s.delete_as(&bob_org, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = s.delete_as(&alice_org, &format!("/sessions/{id}")).await;
    assert_ne!(status, 500);
    let charges = sandbox::session_usage_charges(&s, &alice_org, &id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
    let spent = -charges[0]["amount_cents"].as_i64().expect("cents");
    for key in [&alice_org, &bob_org] {
        let balance = s.get_ok(key, "/billing/balance").await;
        assert_eq!(balance["balance"].as_i64(), Some(500 - spent), "{balance}");
    }
    assert!(sandbox::session_usage_charges(&s, &dave, &id)
        .await
        .is_empty());
    // Who created and who closed it, in the org's log.
    let events = audit_all(&s, &alice, "acme", 100).await;
    let by = |action: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["target"] == id.as_str())
            .unwrap_or_else(|| panic!("no {action} in {events:?}"))["actor_id"]
            .clone()
    };
    assert_eq!(by("session.created"), alice_id.as_str());
    assert_eq!(by("session.closed"), bob_id.as_str());

    // A /v1 instance made with the org's key is the org's too: another member's org key
    // runs commands in it and closes it; personal keys and outsiders get 404s.
    let image = kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
    let (status, made) = s
        .v1_as(
            &alice_org,
            Method::POST,
            "/instances",
            Some(&json!({"image": image})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let instance = made["id"].as_str().expect("id").to_string();
    let (status, ready) = s
        .v1_as(
            &bob_org,
            Method::GET,
            &format!("/instances/{instance}?wait=true"),
            None,
        )
        .await;
    assert_eq!(
        (status, &ready["status"]),
        (200, &json!("ready")),
        "{ready}"
    );
    let (status, ran) = s
        .v1_as(
            &bob_org,
            Method::POST,
            &format!("/instances/{instance}/exec"),
            Some(&json!({"command": "echo in the org"})),
        )
        .await;
    assert_eq!(
        (status, &ran["stdout"]),
        (200, &json!("in the org\n")),
        "{ran}"
    );
    for key in [&alice, &bob, &dave] {
        let (status, body) = s
            .v1_as(key, Method::GET, &format!("/instances/{instance}"), None)
            .await;
        assert_error(status, &body, 404, "not_found");
    }
    let (status, listed) = s.v1_as(&bob_org, Method::GET, "/instances", None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(&instance), "{listed}");
    let (status, closed) = s
        .v1_as(
            &bob_org,
            Method::DELETE,
            &format!("/instances/{instance}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{closed}");
}

/// Sign-up makes the personal org; a sign-in is audited there, with the client's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_are_audited_in_the_personal_org() {
    let s = TestServer::start_with(|c| {
        c.accounts.argon2_memory_kib = 256;
        c.accounts.argon2_iterations = 1;
    })
    .await;
    let creds = json!({"email": "eve@example.com", "password": "eve's long password"});
    let (status, body) = call(
        &s,
        None,
        Method::POST,
        "/auth/signup",
        Some(creds.clone()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(&s, None, Method::POST, "/auth/login", Some(creds), None).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("token").to_string();
    let (status, orgs) = get(&s, &token, "/orgs").await;
    assert_eq!(status, 200, "{orgs}");
    let personal = &orgs["items"][0];
    assert_eq!(
        (
            personal["personal"].as_bool(),
            personal["is_default"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let slug = personal["slug"].as_str().expect("slug");
    let events = audit_all(&s, &token, slug, 50).await;
    assert_eq!(actions(&events), ["auth.signed_in"]);
    assert_eq!(events[0]["ip_address"], "127.0.0.1");
}
