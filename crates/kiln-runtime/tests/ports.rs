//! `connect_port` on real sandboxes: a service listening inside is reached through the
//! agent, bytes pass intact both ways, and nothing outside the sandbox is reachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use kiln_protocol::{ErrorCode, ExecRequest};
use kiln_runtime::{PortStream, Runtime, RuntimeError};
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connects to `port` in `sandbox`, retrying while nothing listens yet (a server started
/// by a concurrent exec), for up to 10 s.
async fn connect_when_listening(rt: &TestRuntime, sandbox: &str, port: u16) -> PortStream {
    let start = Instant::now();
    loop {
        match rt.connect_port(&id(sandbox), port).await {
            Ok(stream) => return stream,
            Err(err) if refused(&err) && start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("connect_port {port}: {err}"),
        }
    }
}

fn refused(err: &RuntimeError) -> bool {
    err.agent_error()
        .is_some_and(|e| e.code == ErrorCode::ConnectionRefused)
}

/// `GET path` over HTTP/1.0 on `stream`: the whole response.
async fn http_get(mut stream: PortStream, path: &str) -> Vec<u8> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: sandbox\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    response
}

fn body(response: &[u8]) -> &[u8] {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    &response[end + 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_inside_serves_10_mb_intact_through_the_agent() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let handle = rt.create_local(busybox_spec("port1")).await.unwrap();
    let (code, out) = sh_within(
        &rt,
        "port1",
        "mkdir -p /srv && dd if=/dev/urandom of=/srv/big bs=1048576 count=10 2>/dev/null \
         && sha256sum /srv/big",
        60_000,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let want = out.split_whitespace().next().unwrap().to_string();
    // The server lives as long as the exec that started it.
    let server = rt.exec(
        &handle.id,
        ExecRequest::shell("httpd -f -p 127.0.0.1:8080 -h /srv").timeout_ms(60_000),
    );
    let client = async {
        let stream = connect_when_listening(&rt, "port1", 8080).await;
        let started = Instant::now();
        let response = http_get(stream, "/big").await;
        eprintln!("10 MiB through connect_port in {:?}", started.elapsed());
        response
    };
    let response = tokio::select! {
        done = server => panic!("the server ended first: {done:?}"),
        response = client => response,
    };
    assert!(
        response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&response[..64])
    );
    let got = body(&response);
    assert_eq!(got.len(), 10 << 20);
    assert_eq!(hex(&Sha256::digest(got)), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_go_both_ways_and_a_half_close_is_passed_on() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let handle = rt.create_local(busybox_spec("port2")).await.unwrap();
    // `wc -c` on the connection answers how much it read once its input ended: only a
    // passed-on half close lets it answer at all.
    let server = rt.exec(
        &handle.id,
        ExecRequest::shell("nc -l -p 7000 -e wc -c").timeout_ms(30_000),
    );
    let client = async {
        let mut stream = connect_when_listening(&rt, "port2", 7000).await;
        stream.write_all(&[7u8; 300_000]).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        rest
    };
    let (done, answer) = tokio::join!(server, client);
    assert_eq!(done.unwrap().exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&answer).trim(), "300000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_outside_the_sandbox_is_reachable() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("port3")).await.unwrap();
    // A service on the host's loopback: the sandbox's loopback is another interface.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let err = match rt.connect_port(&id("port3"), port).await {
        Ok(_) => panic!("reached the host's port {port} from inside the sandbox"),
        Err(err) => err,
    };
    assert!(refused(&err), "{err}");
    assert!(err.to_string().contains(&format!("port {port}")), "{err}");
    let err = match rt.connect_port(&id("port3"), 0).await {
        Ok(_) => panic!("port 0 connected"),
        Err(err) => err,
    };
    assert_eq!(
        err.agent_error().map(|e| e.code.clone()),
        Some(ErrorCode::InvalidRequest)
    );
    assert_alive(&rt, "port3").await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
