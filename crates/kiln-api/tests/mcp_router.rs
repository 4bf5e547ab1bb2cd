//! `/mcp` in-process over `FakeRuntime` (no root, no TCP): the API's authentication in
//! front of the MCP server, and the caller of each request (not of the MCP session) being
//! who the tools act for.
#![allow(clippy::unwrap_used)]
use crate::inproc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use kiln_services::instances::{InstanceSource, NewInstance};
use serde_json::{json, Value};
use tower::ServiceExt;

use inproc::{app, App, DATASET, SAMPLE};

/// One JSON-RPC message to `/mcp`: status, headers, and the JSON-RPC answer (the `data:`
/// of an event stream, or a JSON body), else the body as a string.
async fn rpc(
    app: &App,
    key: Option<&str>,
    session: Option<&str>,
    message: &Value,
) -> (StatusCode, HeaderMap, Value) {
    rpc_in(app, key, session, message, None).await
}

/// [`rpc`] naming the org to act in (`X-Org-Slug`).
async fn rpc_in(
    app: &App,
    key: Option<&str>,
    session: Option<&str>,
    message: &Value,
    org: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = Request::builder()
        .method("POST")
        .uri("/mcp")
        .header(header::HOST, "kiln.example")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    if let Some(org) = org {
        request = request.header("x-org-slug", org);
    }
    if let Some(session) = session {
        request = request
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-06-18");
    }
    let request = request.body(Body::from(message.to_string())).unwrap();
    let response = app.router.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let answer = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.starts_with('{'))
        .or_else(|| Some(text.trim()).filter(|t| t.starts_with('{')))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap_or_else(|| Value::String(text.to_string()));
    (status, headers, answer)
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}})
}

/// An initialized MCP session of `key`: its id.
async fn open(app: &App, key: &str) -> String {
    let (status, headers, answer) = rpc(app, Some(key), None, &initialize()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"]["serverInfo"]["name"], "kiln");
    let session = headers["mcp-session-id"].to_str().unwrap().to_string();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = rpc(app, Some(key), Some(&session), &initialized).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    session
}

#[tokio::test]
async fn no_or_a_bad_credential_is_a_401_before_mcp() {
    let app = app().await;
    for key in [None, Some("kiln_not_a_key"), Some("garbage")] {
        let (status, headers, body) = rpc(&app, key, None, &initialize()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(body["detail"]["code"], "unauthorized");
    }
    let session = open(&app, &app.key).await;
    // The MCP session id is no credential: without the key it is a 401 too.
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let (status, _, _) = rpc(&app, None, Some(&session), &list).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, answer) = rpc(&app, Some(&app.key), Some(&session), &list).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer["result"]["tools"].as_array().unwrap().len() >= 16);
}

#[tokio::test]
async fn tools_act_for_the_key_of_each_request() {
    let app = app().await;
    let admin = app.kiln.auth.authenticate(&app.key).await.unwrap().user;
    let instance = app
        .kiln
        .instances
        .create(
            &admin.user_id,
            NewInstance {
                source: InstanceSource::Sample {
                    dataset: DATASET.into(),
                    sample_id: SAMPLE.into(),
                },
                name: None,
                labels: Default::default(),
                ttl_minutes: None,
                resources: None,
            },
        )
        .await
        .unwrap();
    app.kiln
        .instances
        .get(&admin.user_id, &instance.session_id, true)
        .await
        .unwrap();
    let eve = app
        .kiln
        .auth
        .create_user("eve", "eve@example.com", false)
        .await
        .unwrap();
    let eve_key = app
        .kiln
        .auth
        .create_api_key(&eve.user_id, None)
        .await
        .unwrap()
        .secret;
    let exec = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "exec", "arguments": {"session_id": instance.session_id, "command": "echo hi"}}});
    // Eve's key on the admin's own MCP session: still Eve, so the session is not found.
    let session = open(&app, &app.key).await;
    let (_, _, answer) = rpc(&app, Some(&eve_key), Some(&session), &exec).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["code"], "not_found");
    let (_, _, answer) = rpc(&app, Some(&app.key), Some(&session), &exec).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    assert_eq!(answer["result"]["structuredContent"]["stdout"], "hi\n");
}

/// The tools act in the request's org: with `X-Org-Slug` a session a tool opens is the
/// org's (its account owns it), without it the person's own; a non-member's slug is refused.
#[tokio::test]
async fn tools_act_in_the_org_the_request_names() {
    let app = app().await;
    let eve = app
        .kiln
        .auth
        .create_user("eve", "eve@example.com", false)
        .await
        .unwrap();
    let eve_key = app
        .kiln
        .auth
        .create_api_key(&eve.user_id, None)
        .await
        .unwrap()
        .secret;
    let request = Request::builder()
        .method("POST")
        .uri("/v1/orgs")
        .header(header::AUTHORIZATION, format!("Bearer {eve_key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"name": "Acme", "slug": "acme"}).to_string(),
        ))
        .unwrap();
    let made = app.router.clone().oneshot(request).await.unwrap();
    assert_eq!(made.status(), StatusCode::CREATED);
    let eve_principal = app.kiln.auth.authenticate(&eve_key).await.unwrap();
    let org = app
        .kiln
        .orgs
        .member_context(&eve_principal, "acme")
        .await
        .unwrap()
        .org;

    let create = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
        "name": "create_session", "arguments": {"dataset": DATASET, "sample_id": SAMPLE}}});
    let session = open(&app, &eve_key).await;
    let (_, _, answer) = rpc_in(&app, Some(&eve_key), Some(&session), &create, Some("acme")).await;
    assert_eq!(answer["result"]["isError"], false, "{answer}");
    let in_org = answer["result"]["structuredContent"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(app
        .kiln
        .instances
        .get(&org.account_user_id, &in_org, false)
        .await
        .is_ok());
    assert!(app
        .kiln
        .instances
        .get(&eve.user_id, &in_org, false)
        .await
        .is_err());

    let (_, _, answer) = rpc(&app, Some(&eve_key), Some(&session), &create).await;
    let own = answer["result"]["structuredContent"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(app
        .kiln
        .instances
        .get(&eve.user_id, &own, false)
        .await
        .is_ok());

    // The admin is no member of Acme: the slug is a 404 before MCP.
    let (status, _, body) = rpc_in(&app, Some(&app.key), None, &initialize(), Some("acme")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
