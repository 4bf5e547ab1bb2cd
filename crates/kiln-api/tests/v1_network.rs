//! A sample's network allowlist on real sandboxes (issue 14): its sessions reach the
//! listed hosts through the server's egress proxy (plain HTTP and a CONNECT tunnel), and
//! nothing else; a refusal is a 403 at once, saying why, and shows in
//! `GET /v1/instances/{id}/network`; the server's outbound rules still hold (a listed
//! loopback host the administrator did not allow is refused); a sample without a list
//! has no network at all.
use crate::{common, sandbox};

use std::net::SocketAddr;

use common::{assert_error, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// An HTTP server on `ip` answering every GET with `body`; its address.
async fn http_server(ip: [u8; 4], body: &'static str) -> SocketAddr {
    let app = axum::Router::new().fallback(move || async move { body });
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// Sample `test/net-1` (the busybox image) with `allow` as its `network_allowlist`.
async fn install_network_sample(s: &TestServer, allow: &[String]) {
    let store = kiln_image::ImageStore::open(&s.kiln.config.images_dir()).expect("image store");
    let from = kiln_services::sessions::sample_image_reference(sandbox::DATASET, sandbox::SAMPLE);
    let to = kiln_services::sessions::sample_image_reference(sandbox::DATASET, "net-1");
    store.tag(&from, &to).expect("tag");
    let record = json!({"instance_id": "net-1", "repo": "test/hello",
        "base_commit": "0000000000000000000000000000000000000000", "network_allowlist": allow});
    s.kiln
        .datasets
        .import(kiln_services::datasets::ImportRequest {
            dataset: sandbox::DATASET,
            description: None,
            version_description: None,
            text: &record.to_string(),
            repos_dir: None,
        })
        .await
        .expect("import");
}

async fn sh(s: &TestServer, key: &str, id: &str, command: &str) -> Value {
    let iid = sandbox::start_exec(s, key, id, command).await;
    sandbox::finished(s, key, id, &iid).await
}

async fn network(s: &TestServer, key: &str, id: &str) -> (u16, Value) {
    s.v1_as(key, Method::GET, &format!("/instances/{id}/network"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samples_allowlist_is_all_its_sessions_reach() {
    let allowed = http_server([127, 0, 0, 2], "hello through the proxy\n").await;
    let unlisted = http_server([127, 0, 0, 3], "never\n").await;
    let loopback = http_server([127, 0, 0, 4], "never either\n").await;
    let Some(s) = sandbox::start_if_possible(|c| {
        // 127.0.0.2 stands in for a public host; 127.0.0.4 is listed but not allowed here.
        c.network.allowed_internal_hosts = vec!["127.0.0.2".into()];
    })
    .await
    else {
        return;
    };
    install_network_sample(&s, &[allowed.to_string(), loopback.to_string()]).await;
    let key = s.admin_key.clone();
    let id = sandbox::create_ready_sample(&s, &key, "net-1").await;

    // Plain HTTP through the proxy the sandbox's environment names.
    let done = sh(
        &s,
        &key,
        &id,
        &format!("wget -q -O- http://{allowed}/hello"),
    )
    .await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["stdout"], "hello through the proxy\n", "{done}");
    // A tunnel (what HTTPS does), by hand (stdin kept open: busybox nc stops at its end).
    let (host, port) = kiln_runtime::EGRESS_PROXY_ADDR.split_once(':').unwrap();
    let tunnel = format!(
        "(printf 'CONNECT {allowed} HTTP/1.1\\r\\n\\r\\nGET /x HTTP/1.0\\r\\n\\r\\n'; sleep 2) \\
         | nc {host} {port}"
    );
    let done = sh(&s, &key, &id, &tunnel).await;
    let out = done["stdout"].as_str().unwrap_or_default();
    assert!(
        out.starts_with("HTTP/1.1 200 Connection established"),
        "{done}"
    );
    assert!(out.ends_with("hello through the proxy\n"), "{done}");

    // Not listed: refused at once, saying so.
    let done = sh(
        &s,
        &key,
        &id,
        &format!("wget -q -O- http://{unlisted}/; echo rc=$?"),
    )
    .await;
    assert_eq!(done["stdout"], "rc=1\n", "{done}");
    assert!(
        done["stderr"].as_str().unwrap_or_default().contains("403"),
        "{done}"
    );
    // Listed, but loopback is not for users unless the administrator allows it.
    let done = sh(
        &s,
        &key,
        &id,
        &format!("wget -q -O- http://{loopback}/; echo rc=$?"),
    )
    .await;
    assert_eq!(done["stdout"], "rc=1\n", "{done}");

    let (status, net) = network(&s, &key, &id).await;
    assert_eq!(status, 200, "{net}");
    assert_eq!(net["policy"], "allowlist");
    assert_eq!(
        net["allow"],
        json!([allowed.to_string(), loopback.to_string()])
    );
    assert_eq!(
        net["proxy"],
        format!("http://{}", kiln_runtime::EGRESS_PROXY_ADDR)
    );
    assert_eq!(net["connections"], 2, "{net}");
    assert_eq!(net["blocked_total"], 2, "{net}");
    let blocked = net["blocked"].as_array().expect("blocked");
    assert_eq!(blocked[1]["host"], "127.0.0.3", "{net}");
    assert_eq!(blocked[1]["reason"], "not in the allowlist", "{net}");
    assert_eq!(blocked[0]["host"], "127.0.0.4", "{net}");
    assert!(
        blocked[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("loopback") && r.contains("network.allowed_internal_hosts")),
        "{net}"
    );

    // No list, no network: nothing answers, and the route says so.
    let plain = sandbox::create_ready(&s, &key).await;
    let (ip, port) = (allowed.ip(), allowed.port());
    let probe = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port}; echo rc=$?");
    let done = sh(&s, &key, &plain, &probe).await;
    let out = done["stdout"].as_str().unwrap_or_default();
    assert!(out.starts_with("rc=") && out != "rc=0\n", "{done}");
    let (status, net) = network(&s, &key, &plain).await;
    assert_eq!(status, 200, "{net}");
    assert_eq!(
        (net["policy"].as_str(), net["proxy"].is_null()),
        (Some("none"), true)
    );

    // Someone else's instance is not theirs to look at.
    let (_, bob) = s.user("bob").await;
    let (status, body) = network(&s, &bob, &id).await;
    assert_error(status, &body, 404, "not_found");
}

/// An allowlist that cannot be read refuses the session at once (409), naming the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_allowlist_refuses_the_session() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    install_network_sample(&s, &["pypi.org:99999".to_string()]).await;
    let key = s.admin_key.clone();
    let (status, body) = sandbox::create_session(&s, &key, "net-1").await;
    assert_error(status, &body, 409, "conflict");
    assert!(
        body["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pypi.org:99999")),
        "{body}"
    );
}

/// After a crash the server adopts a session's running sandbox and serves its allowlist
/// again: the old process's end of the proxy went with it, the agent's relay did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_session_keeps_its_allowlist_after_a_restart() {
    let allowed = http_server([127, 0, 0, 2], "still reachable\n").await;
    let unlisted = http_server([127, 0, 0, 3], "never\n").await;
    let Some(s) = sandbox::start_if_possible(|c| {
        c.network.allowed_internal_hosts = vec!["127.0.0.2".into()];
    })
    .await
    else {
        return;
    };
    install_network_sample(&s, &[allowed.to_string()]).await;
    let key = s.admin_key.clone();
    let id = sandbox::create_ready_sample(&s, &key, "net-1").await;
    let fetch = format!("wget -q -O- http://{allowed}/");
    let done = sh(&s, &key, &id, &fetch).await;
    assert_eq!(done["stdout"], "still reachable\n", "{done}");

    let s = s.restart(false).await;
    let done = sh(&s, &key, &id, &fetch).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["stdout"], "still reachable\n", "{done}");
    // The same policy, not an open door.
    let done = sh(
        &s,
        &key,
        &id,
        &format!("wget -q -O- http://{unlisted}/; echo rc=$?"),
    )
    .await;
    assert_eq!(done["stdout"], "rc=1\n", "{done}");
    let (status, net) = network(&s, &key, &id).await;
    assert_eq!(status, 200, "{net}");
    assert_eq!(net["blocked_total"], 1, "{net}");
}
