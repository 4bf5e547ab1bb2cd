//! `/v1/admin/servers` in process, on SQLite: admins only (403 for anyone else), and a
//! SQLite server says it is a single node (409 `single_node`) rather than listing nothing.
//! The registry itself, on PostgreSQL with real servers, is `kiln-cli/tests/nodes.rs`.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use axum::http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn servers_are_for_admins_and_sqlite_is_a_single_node() {
    let app = inproc::app().await;
    let bob = app
        .kiln
        .auth
        .create_user("bob", "bob@example.com", false)
        .await
        .unwrap();
    let bob_key = app
        .kiln
        .auth
        .create_api_key(&bob.user_id, None)
        .await
        .unwrap()
        .secret;
    for (method, uri, body) in [
        ("GET", "/v1/admin/servers", None),
        ("GET", "/v1/admin/servers/node-x", None),
        ("POST", "/v1/admin/servers/node-x/drain", None),
        ("GET", "/v1/admin/servers/node-x/metrics", None),
        (
            "PATCH",
            "/v1/admin/servers/node-x/status",
            Some(json!({"status": "down"})),
        ),
    ] {
        let (status, _, answer) = app
            .send_json(method, uri, Some(&bob_key), body.as_ref())
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {answer}");
        let (status, _, answer) = app
            .send_json(method, uri, Some(&app.key), body.as_ref())
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {uri}: {answer}");
        assert_eq!(answer["detail"]["code"], "single_node", "{answer}");
    }
    let (status, _, answer) = app
        .send_json(
            "PATCH",
            "/v1/admin/servers/node-x/status",
            Some(&app.key),
            Some(&json!({"status": "gone"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}
