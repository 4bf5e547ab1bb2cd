//! `/v1/instances` in-process (no TCP, no root) over a Kiln whose sandboxes come from
//! `FakeRuntime`: validation (422 with the right `loc`), ownership (404), PATCH and the TTL
//! reaper, and how the Codeset routes treat an instance made from an image.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use axum::http::StatusCode;
use serde_json::{json, Value};

const IMAGE: &str = "kiln/busybox:1";

use inproc::{App, DATASET, SAMPLE};

/// Disks up to 2 GiB, lifetimes up to two hours.
async fn app() -> App {
    inproc::app_with(|config| {
        config.runtime.max_disk_mib = 2048;
        config.sessions.max_ttl_minutes = 120;
    })
    .await
}

impl App {
    async fn call_as(
        &self,
        key: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, json) = self.send_json(method, uri, Some(key), body.as_ref()).await;
        (status, json)
    }

    async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, uri, body).await
    }

    /// A ready image instance of the admin's.
    async fn ready(&self, body: Value) -> Value {
        let (status, created) = self.admin("POST", "/v1/instances", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created["status"], "creating", "{created}");
        let id = created["id"].as_str().unwrap();
        let (status, ready) = self
            .admin("GET", &format!("/v1/instances/{id}?wait=true"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ready["status"], "ready", "{ready}");
        ready
    }

    async fn other_user(&self) -> String {
        let user = self
            .kiln
            .auth
            .create_user("mallory", "mallory@example.com", false)
            .await
            .unwrap();
        self.kiln
            .auth
            .create_api_key(&user.user_id, None)
            .await
            .unwrap()
            .secret
    }
}

/// A 422 whose first error is at `loc`.
fn assert_loc(status: StatusCode, body: &Value, loc: &[&str]) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let first = &body["detail"][0];
    assert_eq!(first["loc"], json!(loc), "{body}");
    assert!(
        first["msg"].is_string() && first["type"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn an_image_instance_is_created_shown_listed_and_deleted() {
    let app = app().await;
    let ready = app
        .ready(json!({"image": IMAGE, "name": "worker 1", "labels": {"team": "rl", "run": "7"},
                      "ttl_minutes": 30, "resources": {"cpu": 0.5, "memory_mib": 512, "disk_mib": 1024}}))
        .await;
    let id = ready["id"].as_str().unwrap().to_string();
    assert_eq!(ready["source"], json!({"type": "image", "image": IMAGE}));
    assert_eq!(ready["name"], "worker 1");
    assert_eq!(ready["labels"], json!({"team": "rl", "run": "7"}));
    assert_eq!(
        ready["resources"],
        json!({"cpu": 0.5, "memory_mib": 512, "disk_mib": 1024})
    );
    assert_eq!(ready["location"], "fake");
    for field in ["created_at", "ready_at", "expires_at"] {
        assert!(ready[field].is_string(), "{field}: {ready}");
    }
    assert!(ready["ended_at"].is_null() && ready["error"].is_null());

    // A sample instance, and a Codeset session, are instances too.
    let (status, sample) = app
        .admin(
            "POST",
            "/v1/instances",
            Some(json!({"dataset": DATASET, "sample_id": SAMPLE})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sample}");
    assert_eq!(sample["source"]["type"], "sample");
    assert_eq!(sample["source"]["sample_id"], SAMPLE);
    let (_, codeset) = app
        .admin(
            "POST",
            "/api/v1/sessions",
            Some(json!({"dataset": DATASET, "sample_id": SAMPLE})),
        )
        .await;
    let codeset_id = codeset["session_id"].as_str().unwrap();
    let (status, seen) = app
        .admin("GET", &format!("/v1/instances/{codeset_id}"), None)
        .await;
    assert_eq!((status, &seen["id"]), (StatusCode::OK, &json!(codeset_id)));

    let (status, page) = app.admin("GET", "/v1/instances?limit=2", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (page["total"].as_u64(), page["has_more"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(page["instances"][0]["id"], codeset_id, "newest first");
    let (_, rl) = app
        .admin(
            "GET",
            "/v1/instances?label=team:rl&status=ready,creating",
            None,
        )
        .await;
    assert_eq!(rl["total"], 1, "{rl}");
    assert_eq!(rl["instances"][0]["id"], id.as_str());
    let (_, closed) = app.admin("GET", "/v1/instances?status=closed", None).await;
    assert_eq!(closed["total"], 0);

    // The Codeset listing keeps to sample sessions; the Codeset view of an image instance
    // keeps its required fields; it has nothing to verify.
    let (_, listed) = app.admin("GET", "/api/v1/sessions", None).await;
    assert_eq!(listed["total_count"], 2, "{listed}");
    let (status, view) = app
        .admin("GET", &format!("/api/v1/sessions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&view["dataset"], &view["sample_id"]),
        (&json!(""), &json!(""))
    );
    let (status, refused) = app
        .admin("POST", &format!("/api/v1/sessions/{id}/verify"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["detail"]["code"], "not_made_from_sample");

    let (status, deleted) = app
        .admin("DELETE", &format!("/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["status"], "closed");
    assert!(deleted["ended_at"].is_string());
    assert!(
        app.fake.running().iter().all(|s| s.as_str() != id),
        "sandbox destroyed"
    );
    let (status, again) = app
        .admin("DELETE", &format!("/v1/instances/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
}

#[tokio::test]
async fn every_invalid_input_is_a_422_at_its_place() {
    let app = app().await;
    let long_value = "v".repeat(257);
    let long_key = "k".repeat(64);
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"image": IMAGE, "name": "n".repeat(129)}),
            vec!["body", "name"],
        ),
        (json!({"image": IMAGE, "name": ""}), vec!["body", "name"]),
        (
            json!({"image": IMAGE, "labels": many}),
            vec!["body", "labels"],
        ),
        (
            json!({"image": IMAGE, "labels": {"bad key": "v"}}),
            vec!["body", "labels", "bad key"],
        ),
        (
            json!({"image": IMAGE, "labels": {long_key.clone(): "v"}}),
            vec!["body", "labels", &long_key],
        ),
        (
            json!({"image": IMAGE, "labels": {"k": long_value}}),
            vec!["body", "labels", "k"],
        ),
        (
            json!({"image": IMAGE, "resources": {"cpu": 9}}),
            vec!["body", "resources", "cpu"],
        ),
        (
            json!({"image": IMAGE, "resources": {"cpu": 0}}),
            vec!["body", "resources", "cpu"],
        ),
        (
            json!({"image": IMAGE, "resources": {"memory_mib": 0}}),
            vec!["body", "resources", "memory_mib"],
        ),
        (
            json!({"image": IMAGE, "resources": {"disk_mib": 2049}}),
            vec!["body", "resources", "disk_mib"],
        ),
        (
            json!({"image": IMAGE, "resources": {"gpu": 1}}),
            vec!["body", "resources", "gpu"],
        ),
        (
            json!({"image": IMAGE, "ttl_minutes": 0}),
            vec!["body", "ttl_minutes"],
        ),
        (
            json!({"image": IMAGE, "ttl_minutes": 121}),
            vec!["body", "ttl_minutes"],
        ),
        (
            json!({"image": IMAGE, "dataset": DATASET, "sample_id": SAMPLE}),
            vec!["body", "image"],
        ),
        (json!({}), vec!["body", "image"]),
        (json!({"dataset": DATASET}), vec!["body", "sample_id"]),
        (json!({"image": ""}), vec!["body", "image"]),
        (json!({"image": "no/such:image"}), vec!["body", "image"]),
    ];
    app.fake.forget_image("no/such:image");
    for (body, loc) in cases {
        let (status, answer) = app.admin("POST", "/v1/instances", Some(body.clone())).await;
        assert_loc(status, &answer, &loc);
    }
    assert!(app.fake.running().is_empty(), "nothing was started");
    let (_, page) = app.admin("GET", "/v1/instances", None).await;
    assert_eq!(page["total"], 0, "nothing was stored");

    let too_many: Vec<String> = (0..33).map(|i| format!("label=k{i}:v")).collect();
    let too_many = too_many.join("&");
    for (query, loc) in [
        (too_many.as_str(), vec!["query", "label"]),
        ("limit=0", vec!["query", "limit"]),
        ("limit=101", vec!["query", "limit"]),
        ("limit=x", vec!["query", "limit"]),
        ("offset=-1", vec!["query", "offset"]),
        ("status=running", vec!["query", "status"]),
        ("label=nocolon", vec!["query", "label"]),
        ("label=bad%20key:v", vec!["query", "label", "bad key"]),
        ("label=a:1&label=a:2", vec!["query", "label", "a"]),
    ] {
        let (status, answer) = app
            .admin("GET", &format!("/v1/instances?{query}"), None)
            .await;
        assert_loc(status, &answer, &loc);
    }
}

#[tokio::test]
async fn patch_changes_name_labels_and_the_expiry_the_reaper_reads() {
    let app = app().await;
    let ready = app.ready(json!({"image": IMAGE, "ttl_minutes": 60})).await;
    let id = ready["id"].as_str().unwrap().to_string();
    let uri = format!("/v1/instances/{id}");

    let (status, changed) = app
        .admin(
            "PATCH",
            &uri,
            Some(json!({"name": "renamed", "labels": {"a": "b"}, "ttl_minutes": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(
        (&changed["name"], &changed["labels"]),
        (&json!("renamed"), &json!({"a": "b"}))
    );
    let created =
        chrono::DateTime::parse_from_rfc3339(changed["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(changed["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        expires - created,
        chrono::Duration::minutes(1),
        "lifetime from creation"
    );
    let (_, unnamed) = app.admin("PATCH", &uri, Some(json!({"name": null}))).await;
    assert!(unnamed["name"].is_null(), "{unnamed}");
    assert_eq!(unnamed["labels"], json!({"a": "b"}), "left out: unchanged");

    for (body, loc) in [
        (json!({"ttl_minutes": 0}), vec!["body", "ttl_minutes"]),
        (json!({"ttl_minutes": 121}), vec!["body", "ttl_minutes"]),
        (json!({"name": "x".repeat(129)}), vec!["body", "name"]),
        (json!({"labels": {"-x": "y"}}), vec!["body", "labels", "-x"]),
        (json!({"colour": "red"}), vec!["body", "colour"]),
    ] {
        let (status, answer) = app.admin("PATCH", &uri, Some(body)).await;
        assert_loc(status, &answer, &loc);
    }
    let (status, refused) = app
        .admin(
            "PATCH",
            &uri,
            Some(json!({"resources": {"memory_mib": 1024}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["detail"]["code"], "resources_fixed");
    assert!(refused["detail"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot change resources of a running instance on this backend"));

    // A second instance gets a longer life than it was created with.
    let longer = app.ready(json!({"image": IMAGE, "ttl_minutes": 1})).await;
    let longer_id = longer["id"].as_str().unwrap().to_string();
    let (status, _) = app
        .admin(
            "PATCH",
            &format!("/v1/instances/{longer_id}"),
            Some(json!({"ttl_minutes": 120})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Two minutes on, the reaper ends the shortened one and keeps the lengthened one.
    let later = chrono::Utc::now() + chrono::Duration::minutes(2);
    assert_eq!(app.kiln.sessions.reap_expired(later).await, 1);
    let (_, shortened) = app.admin("GET", &uri, None).await;
    assert_eq!(shortened["status"], "terminated", "{shortened}");
    let (_, kept) = app
        .admin("GET", &format!("/v1/instances/{longer_id}"), None)
        .await;
    assert_eq!(kept["status"], "ready", "{kept}");

    // An ended instance's lifetime is fixed; its name and labels are not.
    let (status, _) = app
        .admin("PATCH", &uri, Some(json!({"ttl_minutes": 90})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, relabelled) = app
        .admin("PATCH", &uri, Some(json!({"labels": {"done": "yes"}})))
        .await;
    assert_eq!(
        (status, &relabelled["labels"]),
        (StatusCode::OK, &json!({"done": "yes"}))
    );
}

#[tokio::test]
async fn another_users_instance_is_not_found_on_every_route() {
    let app = app().await;
    let mine = app
        .ready(json!({"image": IMAGE, "labels": {"team": "rl"}}))
        .await;
    let id = mine["id"].as_str().unwrap();
    let other = app.other_user().await;
    let uri = format!("/v1/instances/{id}");
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "mine now"}))),
        ("DELETE", None),
    ] {
        let (status, answer) = app.call_as(&other, method, &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {answer}");
        assert_eq!(answer["detail"]["code"], "not_found");
        assert_eq!(
            answer["detail"]["message"],
            format!("instance {id} not found")
        );
    }
    let (_, theirs) = app
        .call_as(&other, "GET", "/v1/instances?label=team:rl", None)
        .await;
    assert_eq!(theirs["total"], 0, "{theirs}");
    let (_, still) = app.admin("GET", &uri, None).await;
    assert_eq!(
        (&still["status"], &still["name"]),
        (&json!("ready"), &Value::Null)
    );
    let (status, _) = app.admin("GET", "/v1/instances/ins_nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_v1_document_describes_the_instance_routes() {
    let app = app().await;
    let (status, doc) = app.admin("GET", "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/instances", &["get", "post"][..]),
        ("/instances/{id}", &["get", "patch", "delete"][..]),
    ] {
        for method in methods {
            assert!(
                paths[path][method]["responses"].is_object(),
                "{path} {method}"
            );
        }
    }
    for schema in [
        "InstanceView",
        "InstanceCreateRequest",
        "InstanceUpdateRequest",
        "InstanceListResponse",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
