//! The foundation's endpoints over real HTTP: auth, keys, tokens, datasets, samples,
//! downloads, and every bad input we could think of.
use crate::common;

use std::io::Read;

use common::{assert_error, assert_validation, bearer, json, make_repo, TestServer};
use kiln_services::datasets::ImportRequest;
use serde_json::{json, Value};

#[tokio::test]
async fn health_and_unknown_routes() {
    let s = TestServer::start().await;
    let (status, body) = json(s.get("/health").send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_str().expect("ts").ends_with('Z'));

    let (status, body) = json(s.get("/nope").send().await.expect("send")).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = json(
        s.client
            .get(s.base.replace("/api/v1", "/nope"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = json(s.delete("/datasets").send().await.expect("send")).await;
    assert_error(status, &body, 405, "method_not_allowed");
}

#[tokio::test]
async fn missing_and_bad_credentials_are_401() {
    let s = TestServer::start().await;
    for header in [
        None,
        Some("Bearer"),
        Some("Basic abc"),
        Some("Bearer kiln_notakey"),
        Some("Bearer not.a.jwt"),
    ] {
        let mut req = s.get("/users/me");
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        let response = req.send().await.expect("send");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or("")),
            Some("Bearer")
        );
        let (status, body) = json(response).await;
        assert_error(status, &body, 401, "unauthorized");
    }
}

#[tokio::test]
async fn api_keys_are_shown_once_masked_after_and_revocable() {
    let s = TestServer::start().await;
    let (_, key) = s.user("alice").await;
    let (status, body) = s
        .post_as(&key, "/users/me/api-keys", &json!({"name": "ci"}))
        .await;
    assert_eq!(status, 200, "{body}");
    let new_key = body["api_key"]["key"].as_str().expect("key").to_string();
    let key_id = body["api_key"]["key_id"].as_str().expect("id").to_string();
    assert!(
        new_key.starts_with("kiln_") && new_key.len() > 30,
        "{new_key}"
    );

    // The new key works, and listings never show a full secret.
    let (status, me) = s.get_as(&new_key, "/users/me").await;
    assert_eq!(status, 200);
    let keys = me["api_keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    for k in keys {
        let shown = k["key"].as_str().expect("key");
        assert!(
            shown.contains('…') && shown != new_key && shown != key,
            "{shown}"
        );
    }

    // An empty body is accepted (name is optional).
    let (status, _) = json(
        s.post("/users/me/api-keys")
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);

    // Another user cannot revoke alice's key: it is "not found" to them.
    let (_, bob) = s.user("bob").await;
    let (status, body) = json(
        s.delete("/users/me/api-keys")
            .header("Authorization", bearer(&bob))
            .json(&json!({"key_id": key_id}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");

    let (status, body) = json(
        s.delete("/users/me/api-keys")
            .header("Authorization", bearer(&key))
            .json(&json!({"key_id": key_id}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked_key_id"], key_id.as_str());
    let (status, body) = s.get_as(&new_key, "/users/me").await;
    assert_error(status, &body, 401, "unauthorized");
    // Revoking twice: the key is no longer an active key of the user.
    let (status, body) = json(
        s.delete("/users/me/api-keys")
            .header("Authorization", bearer(&key))
            .json(&json!({"key_id": key_id}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test]
async fn api_key_inputs_are_validated_and_limited() {
    let s = TestServer::start_with(|c| c.auth.max_api_keys_per_user = 3).await;
    let (_, key) = s.user("carol").await;
    let auth = bearer(&key);
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"name": 5}), &["body", "name"]),
        (json!({"name": "x".repeat(101)}), &["body", "name"]),
        (json!([1, 2]), &["body"]),
    ];
    for (body, loc) in cases {
        let (status, got) = json(
            s.post("/users/me/api-keys")
                .header("Authorization", &auth)
                .json(&body)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_validation(status, &got, loc);
    }
    let (status, got) = json(
        s.post("/users/me/api-keys")
            .header("Authorization", &auth)
            .body("{\"name\":")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 422, "{got}");
    assert_eq!(got["detail"][0]["type"], "json_invalid");
    let (status, got) = json(
        s.delete("/users/me/api-keys")
            .header("Authorization", &auth)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &got, &["body"]);
    let (status, got) = json(
        s.delete("/users/me/api-keys")
            .header("Authorization", &auth)
            .json(&json!({}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &got, &["body", "key_id"]);

    for _ in 0..2 {
        let (status, _) = json(
            s.post("/users/me/api-keys")
                .header("Authorization", &auth)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 200);
    }
    let response = s
        .post("/users/me/api-keys")
        .header("Authorization", &auth)
        .send()
        .await
        .expect("send");
    assert!(response.headers().contains_key("retry-after"));
    let (status, got) = json(response).await;
    assert_error(status, &got, 429, "too_many_requests");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_refused() {
    let s = TestServer::start().await;
    let (_, key) = s.user("dave").await;
    let (status, pair) = json(
        s.post("/auth/token")
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{pair}");
    let access = pair["access_token"].as_str().expect("access").to_string();
    let refresh1 = pair["refresh_token"].as_str().expect("refresh").to_string();
    assert_eq!(pair["token_type"], "Bearer");

    let (status, me) = s.get_as(&access, "/users/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "dave");
    assert!(
        me["last_login_at"].is_string(),
        "issuing tokens is a sign-in: {me}"
    );

    // A refresh token is not an access token, and vice versa.
    let (status, body) = s.get_as(&refresh1, "/users/me").await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = json(
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": access}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");

    let (status, next) = json(
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": refresh1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let refresh2 = next["refresh_token"].as_str().expect("refresh").to_string();
    assert_ne!(refresh1, refresh2);

    // Reusing the spent token fails, and revokes the whole family (refresh2 too).
    let (status, body) = json(
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": refresh1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = json(
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": refresh2}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");

    for bad in [
        json!({"refresh_token": "garbage"}),
        json!({"refresh_token": ""}),
    ] {
        let (status, body) = json(
            s.post("/auth/refresh")
                .json(&bad)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_error(status, &body, 401, "unauthorized");
    }
    let (status, body) = json(
        s.post("/auth/refresh")
            .json(&json!({"refresh_token": 1}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["body", "refresh_token"]);
}

#[tokio::test]
async fn accept_terms_records_the_time() {
    let s = TestServer::start().await;
    let (_, key) = s.user("erin").await;
    let (status, me) = s.get_as(&key, "/users/me").await;
    assert_eq!(status, 200);
    assert!(me["terms_accepted_at"].is_null());
    let (status, me) = json(
        s.post("/users/me/accept-terms")
            .header("Authorization", bearer(&key))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        me["terms_accepted_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{me}"
    );
}

async fn import_two_datasets(s: &TestServer) -> (String, String, tempfile::TempDir) {
    let repos = tempfile::tempdir().expect("tempdir");
    let (first, second) = make_repo(&repos.path().join("acme").join("calc"));
    let records: String = (1..=7)
        .map(|i| {
            json!({"instance_id": format!("acme__calc-{i}"), "repo": "acme/calc", "base_commit": first,
                   "problem_statement": format!("bug {i}"), "FAIL_TO_PASS": "[\"t::a\"]", "PASS_TO_PASS": ["t::b"]})
            .to_string()
                + "\n"
        })
        .collect();
    let summary = s
        .kiln
        .datasets
        .import(ImportRequest {
            dataset: "alpha",
            description: Some("first".into()),
            version_description: None,
            text: &records,
            repos_dir: Some(repos.path()),
        })
        .await
        .expect("import alpha");
    assert_eq!((summary.created, summary.updated), (7, 0));
    let other = json!({"instance_id": "other-x_1", "repo": "other/unknown", "base_commit": first})
        .to_string();
    s.kiln
        .datasets
        .import(ImportRequest {
            dataset: "beta",
            description: None,
            version_description: None,
            text: &other,
            repos_dir: None,
        })
        .await
        .expect("import beta");
    (first, second, repos)
}

#[tokio::test]
async fn datasets_and_samples_list_page_and_search() {
    let s = TestServer::start().await;
    import_two_datasets(&s).await;

    let (status, datasets) = json(s.get("/datasets").send().await.expect("send")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = datasets
        .as_array()
        .expect("bare array")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(datasets[0]["sample_count"], 7);

    let (status, all) = json(s.get("/samples").send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (all["total_count"].as_u64(), all["has_more"].as_bool()),
        (Some(8), Some(false))
    );
    assert_eq!(all["samples"].as_array().map(Vec::len), Some(8));
    let sample = &all["samples"][0];
    assert_eq!(
        sample["fail_to_pass"],
        json!(["t::a"]),
        "JSON-encoded lists are decoded"
    );
    assert_eq!(sample["verifier"], "test_suite");
    assert_eq!(sample["version"], 1);

    let mut seen = Vec::new();
    for page in 1..=3 {
        let (status, body) = json(
            s.get(&format!("/samples?dataset=alpha&page={page}&page_size=3"))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["total_count"], 7);
        assert_eq!(body["page"], page);
        assert_eq!(body["has_more"], page < 3, "page {page}: {body}");
        seen.extend(
            body["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .map(|x| x["sample_id"].to_string()),
        );
    }
    assert_eq!(seen.len(), 7);
    seen.dedup();
    assert_eq!(seen.len(), 7, "pages do not overlap");

    let (_, body) = json(s.get("/samples?search=CALC-3").send().await.expect("send")).await;
    assert_eq!(body["total_count"], 1, "search is case-insensitive: {body}");
    let (_, body) = json(s.get("/samples?search=x_1").send().await.expect("send")).await;
    assert_eq!(body["total_count"], 1, "{body}");
    for literal in ["c_1", "%25"] {
        let (_, body) = json(
            s.get(&format!("/samples?search={literal}"))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(body["total_count"], 0, "% and _ match literally: {body}");
    }
    let (_, body) = json(s.get("/samples?dataset=nope").send().await.expect("send")).await;
    assert_eq!(body["total_count"], 0);
    let (_, body) = json(
        s.get("/samples?page=5&page_size=100")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (
            body["samples"].as_array().map(Vec::len),
            body["has_more"].as_bool()
        ),
        (Some(0), Some(false))
    );
}

#[tokio::test]
async fn sample_list_rejects_bad_paging() {
    let s = TestServer::start().await;
    for (query, loc) in [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=x", "page_size"),
        ("page=99999999999999999999", "page"),
    ] {
        let (status, body) = json(
            s.get(&format!("/samples?{query}"))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_validation(status, &body, &["query", loc]);
    }
    let long = "a".repeat(500);
    let (status, body) = json(
        s.get(&format!("/samples?search={long}"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_validation(status, &body, &["query", "search"]);
}

fn untar(gz: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read");
        files.push((path, data));
    }
    files
}

#[tokio::test]
async fn download_serves_record_and_repository_by_version() {
    let s = TestServer::start().await;
    let (first, second, repos) = import_two_datasets(&s).await;
    let auth = bearer(&s.admin_key);

    let (status, body) = json(
        s.get("/samples/alpha/acme__calc-1/download")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(status, &body, 401, "unauthorized");

    let response = s
        .get("/samples/alpha/acme__calc-1/download")
        .header("Authorization", &auth)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"acme__calc-1-v1.tar.gz\""),
        "{disposition}"
    );
    let files = untar(&response.bytes().await.expect("bytes"));
    let record: Value = serde_json::from_slice(
        &files
            .iter()
            .find(|(p, _)| p.ends_with("/sample.json"))
            .expect("sample.json")
            .1,
    )
    .expect("json");
    assert_eq!(record["base_commit"], first.as_str());
    let lib = files
        .iter()
        .find(|(p, _)| p == "acme__calc-1-v1/repo/lib.py")
        .expect("repo file");
    assert_eq!(
        String::from_utf8_lossy(&lib.1),
        "def add(a, b):\n    return a - b\n"
    );
    assert!(
        !files.iter().any(|(p, _)| p.ends_with("README")),
        "repository is at base_commit, not HEAD"
    );

    // Re-import with a new base commit: version 2 becomes latest, version 1 stays reachable.
    let record2 =
        json!({"instance_id": "acme__calc-1", "repo": "acme/calc", "base_commit": second})
            .to_string();
    let summary = s
        .kiln
        .datasets
        .import(ImportRequest {
            dataset: "alpha",
            description: None,
            version_description: Some("v2".into()),
            text: &record2,
            repos_dir: Some(repos.path()),
        })
        .await
        .expect("reimport");
    assert_eq!((summary.created, summary.updated), (0, 1));
    let (_, list) = json(s.get("/samples?search=calc-1").send().await.expect("send")).await;
    assert_eq!(list["samples"][0]["version"], 2);
    assert_eq!(list["samples"][0]["latest"], true);
    let latest = s
        .get("/samples/alpha/acme__calc-1/download")
        .header("Authorization", &auth)
        .send()
        .await
        .expect("send");
    assert!(untar(&latest.bytes().await.expect("bytes"))
        .iter()
        .any(|(p, _)| p.ends_with("/repo/README")));
    let v1 = s
        .get("/samples/alpha/acme__calc-1/download?version=1")
        .header("Authorization", &auth)
        .send()
        .await
        .expect("send");
    assert_eq!(v1.status(), 200);
    assert!(!untar(&v1.bytes().await.expect("bytes"))
        .iter()
        .any(|(p, _)| p.ends_with("/repo/README")));

    // Records imported without their repository still download, and say so.
    let beta = s
        .get("/samples/beta/other-x_1/download")
        .header("Authorization", &auth)
        .send()
        .await
        .expect("send");
    assert_eq!(beta.status(), 200);
    assert_eq!(beta.headers()["x-kiln-repository"], "missing");

    for (path, want) in [
        ("/samples/alpha/acme__calc-1/download?version=3", 404),
        ("/samples/alpha/nope/download", 404),
        ("/samples/nope/acme__calc-1/download", 404),
        ("/samples/alpha/acme__calc-1/download?version=0", 422),
        ("/samples/alpha/acme__calc-1/download?version=x", 422),
        ("/samples/%ff/acme__calc-1/download", 422),
    ] {
        let (status, body) = json(
            s.get(path)
                .header("Authorization", &auth)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let s = TestServer::start_with(|c| c.limits.max_body_bytes = 4096).await;
    let big = json!({"name": "x".repeat(10_000)});
    let (status, body) = s.post_as(&s.admin_key, "/users/me/api-keys", &big).await;
    assert_error(status, &body, 413, "payload_too_large");
}

#[tokio::test]
async fn openapi_and_docs_are_served() {
    let s = TestServer::start().await;
    let (status, doc) = json(s.get("/openapi.json").send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"]["/samples"]["get"].is_object());
    let docs = s
        .client
        .get(s.base.replace("/api/v1", "/docs"))
        .send()
        .await
        .expect("send");
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("text").contains("openapi"));
}
