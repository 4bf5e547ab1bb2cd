//! Port forwards over real HTTP on real sandboxes: an HTTP server started inside is
//! reached through a host port and through the path proxy, bytes intact; closing the
//! forward or the instance stops it; nothing listening is a 502; another user sees 404s;
//! a protocol switch (WebSocket) is carried (`upgrade`).
use crate::{common, sandbox};
#[path = "v1_ports/upgrade.rs"]
mod upgrade;

use std::time::{Duration, Instant};

use common::{assert_error, assert_validation, bearer, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Runs `command` in instance `id` to its end: its stdout.
async fn run(s: &TestServer, key: &str, id: &str, command: &str) -> String {
    let iid = sandbox::start_exec(s, key, id, command).await;
    let done = sandbox::finished(s, key, id, &iid).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    done["stdout"].as_str().expect("stdout").to_string()
}

/// Writes `/srv/hello.txt` and a 10 MiB random `/srv/big`, then starts busybox httpd on
/// 127.0.0.1:8080 inside (it runs as long as that command: 10 minutes): the SHA-256 of
/// `/srv/big`.
async fn serve_files(s: &TestServer, key: &str, id: &str) -> String {
    let out = run(
        s,
        key,
        id,
        "mkdir -p /srv && echo hello > /srv/hello.txt \
         && dd if=/dev/urandom of=/srv/big bs=1048576 count=10 2>/dev/null && sha256sum /srv/big",
    )
    .await;
    let (status, started) = s
        .post_as(
            key,
            &format!("/sessions/{id}/exec"),
            &json!({"command": "httpd -f -p 127.0.0.1:8080 -h /srv", "command_timeout": 600}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    out.split_whitespace().next().expect("hash").to_string()
}

async fn open(s: &TestServer, key: &str, id: &str, body: Value) -> Value {
    let (status, forward) = s
        .v1_as(
            key,
            Method::POST,
            &format!("/instances/{id}/port-forwards"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 201, "{forward}");
    forward
}

async fn listed(s: &TestServer, key: &str, id: &str) -> Vec<String> {
    let (status, list) = s
        .v1_as(
            key,
            Method::GET,
            &format!("/instances/{id}/port-forwards"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    list["port_forwards"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["forward_id"].as_str().expect("id").to_string())
        .collect()
}

/// GET `url` until the server inside answers (it may still be starting): status, body.
async fn fetch(request: impl Fn() -> reqwest::RequestBuilder) -> (u16, Vec<u8>) {
    let start = Instant::now();
    loop {
        let got = match request().send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                response.bytes().await.map(|b| (status, b.to_vec()))
            }
            Err(e) => Err(e),
        };
        match got {
            Ok((502, _)) | Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(answer) => return answer,
            Err(e) => panic!("no answer: {e}"),
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether a connection to `address` is refused or closed without a byte, within 5 s.
async fn stops_answering(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match tokio::net::TcpStream::connect(address).await {
            Err(_) => return true,
            Ok(mut socket) => {
                let _ = socket.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").await;
                let mut buf = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut buf))
                        .await;
                if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_inside_is_reached_on_a_host_port_and_under_the_api() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    let want = serve_files(&s, &key, &id).await;

    let host = open(&s, &key, &id, json!({"port": 8080, "mode": "host_port"})).await;
    assert_eq!(host["port"], 8080);
    assert_eq!(host["mode"], "host_port");
    assert_eq!(host["instance_id"], id.as_str());
    let address = host["host_address"]
        .as_str()
        .expect("host address")
        .to_string();
    assert!(address.starts_with("127.0.0.1:"), "{host}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (status, big) = fetch(|| client.get(format!("http://{address}/big"))).await;
    eprintln!("10 MiB through a host port in {:?}", started.elapsed());
    assert_eq!(status, 200);
    assert_eq!(big.len(), 10 << 20);
    assert_eq!(sha256(&big), want, "every byte, in order");

    let path = open(&s, &key, &id, json!({"port": 8080, "mode": "path"})).await;
    let url = path["url"].as_str().expect("url").to_string();
    assert_eq!(url, format!("/v1/instances/{id}/ports/8080/"));
    assert!(path["host_address"].is_null(), "{path}");
    let through_api = |p: &str| {
        s.v1(Method::GET, &format!("/instances/{id}/ports/8080/{p}"))
            .header("Authorization", bearer(&key))
    };
    let (status, hello) = fetch(|| through_api("hello.txt")).await;
    assert_eq!((status, hello.as_slice()), (200, b"hello\n".as_slice()));
    let started = Instant::now();
    let (status, big) = fetch(|| through_api("big")).await;
    eprintln!("10 MiB through the path proxy in {:?}", started.elapsed());
    assert_eq!(status, 200);
    assert_eq!(sha256(&big), want);
    let (status, _) = fetch(|| through_api("missing.txt")).await;
    assert_eq!(status, 404, "the service's own answer is passed on");
    let mut ids = listed(&s, &key, &id).await;
    ids.sort();
    let mut want_ids = vec![
        host["forward_id"].as_str().expect("id").to_string(),
        path["forward_id"].as_str().expect("id").to_string(),
    ];
    want_ids.sort();
    assert_eq!(ids, want_ids);

    // Someone else sees none of it.
    let (_, other) = s.user("mallory").await;
    let forwards = format!("/instances/{id}/port-forwards");
    for (method, p, body) in [
        (Method::GET, forwards.clone(), None),
        (Method::POST, forwards.clone(), Some(json!({"port": 8080}))),
        (
            Method::DELETE,
            format!("{forwards}/{}", host["forward_id"].as_str().expect("id")),
            None,
        ),
        (
            Method::GET,
            format!("/instances/{id}/ports/8080/hello.txt"),
            None,
        ),
    ] {
        let (status, body) = s.v1_as(&other, method, &p, body.as_ref()).await;
        assert_error(status, &body, 404, "not_found");
    }
    let response = s
        .v1(
            Method::GET,
            &format!("/instances/{id}/ports/8080/hello.txt"),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status().as_u16(),
        401,
        "the path proxy needs the owner's token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_forward_or_the_instance_stops_it() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    serve_files(&s, &key, &id).await;
    let forwards = format!("/instances/{id}/port-forwards");
    let host = open(&s, &key, &id, json!({"port": 8080})).await;
    let address = host["host_address"].as_str().expect("address").to_string();
    let path = open(&s, &key, &id, json!({"port": 8080, "mode": "path"})).await;
    let through_api = |p: &str| {
        s.v1(Method::GET, &format!("/instances/{id}/ports/8080/{p}"))
            .header("Authorization", bearer(&key))
    };
    let client = reqwest::Client::new();
    let (status, _) = fetch(|| client.get(format!("http://{address}/hello.txt"))).await;
    assert_eq!(status, 200);

    // Closing the host forward stops its listener; the path forward goes on.
    let host_id = host["forward_id"].as_str().expect("id");
    let (status, closed) = s
        .v1_as(&key, Method::DELETE, &format!("{forwards}/{host_id}"), None)
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["close_reason"], "closed by its owner");
    assert!(closed["closed_at"].is_string(), "{closed}");
    assert!(stops_answering(&address).await, "{address} still answers");
    let (status, body) = s
        .v1_as(&key, Method::DELETE, &format!("{forwards}/{host_id}"), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(
        listed(&s, &key, &id).await,
        [path["forward_id"].as_str().expect("id")]
    );
    let (status, _) = fetch(|| through_api("hello.txt")).await;
    assert_eq!(status, 200);

    // The instance's end closes what is left.
    let again = open(&s, &key, &id, json!({"port": 8080})).await;
    let again_address = again["host_address"].as_str().expect("address").to_string();
    let (status, body) = s.delete_as(&key, &format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let start = Instant::now();
    while !listed(&s, &key, &id).await.is_empty() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        listed(&s, &key, &id).await.is_empty(),
        "forwards of an ended instance are closed"
    );
    assert!(stops_answering(&again_address).await);
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/ports/8080/hello.txt"),
            None,
        )
        .await;
    assert_error(status, &body, 409, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_502_and_bad_requests_are_refused() {
    // One host port to give out: a second `host_port` forward finds none free.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let Some(s) = sandbox::start_if_possible(|c| {
        c.ports.max_per_instance = 3;
        c.ports.host_port_range = [free, free];
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    let forwards = format!("/instances/{id}/port-forwards");

    open(&s, &key, &id, json!({"port": 9, "mode": "path"})).await;
    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/ports/9/x"),
            None,
        )
        .await;
    assert_error(status, &body, 502, "bad_gateway");
    let message = body["detail"]["message"].as_str().expect("message");
    assert!(
        message.contains("nothing accepts connections on port 9"),
        "{message}"
    );
    let host = open(&s, &key, &id, json!({"port": 9})).await;
    let address = host["host_address"].as_str().expect("address");
    assert_eq!(
        address,
        format!("127.0.0.1:{free}"),
        "from ports.host_port_range"
    );
    assert!(
        stops_answering(address).await,
        "a connection to nothing is closed at once"
    );
    let (status, body) = s
        .v1_as(&key, Method::POST, &forwards, Some(&json!({"port": 10})))
        .await;
    assert_error(status, &body, 503, "unavailable");

    let (status, body) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/ports/8080/x"),
            None,
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &forwards,
            Some(&json!({"port": 9, "mode": "path"})),
        )
        .await;
    assert_error(status, &body, 409, "conflict");

    for (body, loc) in [
        (json!({"port": 0}), vec!["body", "port"]),
        (json!({"port": 65536}), vec!["body", "port"]),
        (json!({"port": "http"}), vec!["body", "port"]),
        (json!({"port": 80, "mode": "udp"}), vec!["body", "mode"]),
        (json!({}), vec!["body", "port"]),
    ] {
        let (status, got) = s.v1_as(&key, Method::POST, &forwards, Some(&body)).await;
        let loc: Vec<&str> = loc.to_vec();
        assert_validation(status, &got, &loc);
    }
    let (status, got) = s
        .v1_as(
            &key,
            Method::GET,
            &format!("/instances/{id}/ports/0/x"),
            None,
        )
        .await;
    assert_validation(status, &got, &["path", "port"]);

    open(&s, &key, &id, json!({"port": 10, "mode": "path"})).await;
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &forwards,
            Some(&json!({"port": 11, "mode": "path"})),
        )
        .await;
    assert_error(status, &body, 429, "too_many_requests");
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            "/instances/nope/port-forwards",
            Some(&json!({"port": 11})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
}

/// Answers each connection with the head of the request it got (as the body), and
/// `/cgi-bin/echo` answers the method, the query and the body of a request.
const ECHO_SERVERS: &str = r#"mkdir -p /srv/cgi-bin && cat > /srv/head.sh <<'END'
: > /tmp/head
while IFS= read -r line; do
  [ ${#line} -le 1 ] && break
  echo "$line" >> /tmp/head
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$(wc -c < /tmp/head)"
cat /tmp/head
END
printf '#!/bin/sh\necho "Content-Type: text/plain"\necho\necho "$REQUEST_METHOD $QUERY_STRING"\ncat\n' > /srv/cgi-bin/echo
chmod +x /srv/cgi-bin/echo"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_the_request_on_without_the_callers_credential() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    run(&s, &key, &id, ECHO_SERVERS).await;
    sandbox::start_exec(
        &s,
        &key,
        &id,
        "nc -ll -p 7001 -e sh /srv/head.sh & httpd -f -p 127.0.0.1:8080 -h /srv",
    )
    .await;
    open(&s, &key, &id, json!({"port": 7001, "mode": "path"})).await;
    open(&s, &key, &id, json!({"port": 8080, "mode": "path"})).await;

    let (status, head) = fetch(|| {
        s.v1(
            Method::GET,
            &format!("/instances/{id}/ports/7001/a/b%20c?x=1&y=2"),
        )
        .header("Authorization", bearer(&key))
        .header("X-Test", "kept")
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "dropped")
        .header(
            "Cookie",
            "kiln_session=secret-cookie; theme=dark; kiln_csrf=c",
        )
    })
    .await;
    assert_eq!(status, 200);
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let lines: Vec<&str> = head.lines().map(str::trim_end).collect();
    assert_eq!(lines[0], "get /a/b%20c?x=1&y=2 http/1.1", "{head}");
    assert!(lines.contains(&"x-test: kept"), "{head}");
    assert!(lines.contains(&"host: localhost:7001"), "{head}");
    assert!(
        lines.contains(&format!("x-forwarded-prefix: /v1/instances/{id}/ports/7001").as_str()),
        "{head}"
    );
    assert!(
        lines.contains(&"cookie: theme=dark"),
        "the service's own cookies pass: {head}"
    );
    for gone in [
        "authorization",
        "x-hop",
        "connection: keep-alive",
        "secret-cookie",
        "kiln_csrf",
    ] {
        assert!(!head.contains(gone), "{gone} reached the service: {head}");
    }
    assert!(
        !head.contains(&key.to_lowercase()),
        "the caller's key reached the service"
    );

    let body: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (status, echoed) = fetch(|| {
        s.v1(
            Method::POST,
            &format!("/instances/{id}/ports/8080/cgi-bin/echo?q=1"),
        )
        .header("Authorization", bearer(&key))
        .body(body.clone())
    })
    .await;
    assert_eq!(status, 200);
    let mut want = b"POST q=1\n".to_vec();
    want.extend_from_slice(&body);
    assert!(
        echoed == want,
        "the body reached the service intact ({} bytes back)",
        echoed.len()
    );

    let (status, doc) = s.v1_as(&key, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/instances/{id}/port-forwards",
        "/instances/{id}/port-forwards/{forward_id}",
        "/instances/{id}/ports/{port}/{path}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    assert!(doc["components"]["schemas"]["PortForwardView"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_are_reopened_after_a_crash_and_limited_per_user() {
    let Some(s) = sandbox::start_if_possible(|c| c.ports.max_per_user = 2).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    serve_files(&s, &key, &id).await;
    let path = open(&s, &key, &id, json!({"port": 8080, "mode": "path"})).await;
    let host = open(&s, &key, &id, json!({"port": 8080})).await;
    let (status, body) = s
        .v1_as(
            &key,
            Method::POST,
            &format!("/instances/{id}/port-forwards"),
            Some(&json!({"port": 8081})),
        )
        .await;
    assert_error(status, &body, 429, "too_many_requests");

    // A crash: the sandbox (and the server inside) live on; the next server adopts them.
    let s = s.restart(false).await;
    let path_id = path["forward_id"].as_str().expect("id");
    assert!(listed(&s, &key, &id).await.contains(&path_id.to_string()));
    let (status, hello) = fetch(|| {
        s.v1(
            Method::GET,
            &format!("/instances/{id}/ports/8080/hello.txt"),
        )
        .header("Authorization", bearer(&key))
    })
    .await;
    assert_eq!((status, hello.as_slice()), (200, b"hello\n".as_slice()));
    // In this test the crashed server's listener still holds the host port (the process
    // lives on), so the forward cannot listen there again: it is closed, saying why.
    let host_id = host["forward_id"].as_str().expect("id");
    let stored = s
        .store()
        .await
        .get_port_forward(host_id)
        .await
        .expect("store")
        .expect("recorded");
    let reason = stored.close_reason.expect("closed at the restart");
    assert!(reason.contains("again after a restart"), "{reason}");
}
