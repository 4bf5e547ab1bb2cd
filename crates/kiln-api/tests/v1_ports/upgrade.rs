//! A protocol switch through the path proxy (what a WebSocket does): a service inside
//! answers `101 Switching Protocols` and echoes raw bytes; the caller's connection carries
//! them both ways afterwards, and closing the forward ends it.
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::common::TestServer;
use super::{open, run, sandbox};

/// A service on port 7002 that accepts any `Upgrade`, names it back, then echoes.
const UPGRADE_SERVER: &str = r#"mkdir -p /srv && cat > /srv/upgrade.sh <<'END'
asked=none
while IFS= read -r line; do
  [ ${#line} -le 1 ] && break
  case "$line" in [Uu]pgrade:*) asked=$(echo "${line#*:}" | tr -d ' \r') ;; esac
done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n' "$asked"
exec cat
END"#;

/// Reads up to the end of an HTTP head: the head, lower-cased.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut byte))
            .await
            .expect("a head within 10 s")
            .expect("read");
        assert!(n == 1, "the connection ended in the head: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// Opens a connection to the proxy and asks it to switch to `kiln-echo`: the connection
/// and the head of the answer.
async fn ask_switch(s: &TestServer, key: &str, id: &str) -> (TcpStream, String) {
    let root = s.base.trim_end_matches("/api/v1");
    let address = root.trim_start_matches("http://").to_string();
    let mut socket = TcpStream::connect(&address).await.expect("connect");
    let request = format!(
        "GET /v1/instances/{id}/ports/7002/chat HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {key}\r\nConnection: Upgrade\r\nUpgrade: kiln-echo\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let head = read_head(&mut socket).await;
    (socket, head)
}

/// A switched connection, retrying while the service inside is still starting (a 502):
/// the connection and the 101's head.
async fn switched(s: &TestServer, key: &str, id: &str) -> (TcpStream, String) {
    let start = Instant::now();
    loop {
        let (socket, head) = ask_switch(s, key, id).await;
        if head.starts_with("http/1.1 101") {
            return (socket, head);
        }
        assert!(
            head.starts_with("http/1.1 502") && start.elapsed() < Duration::from_secs(10),
            "no switch: {head}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `socket` reaches its end within 5 s (the other side closed).
async fn ends(socket: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_is_carried_both_ways_until_the_forward_closes() {
    let Some(s) = sandbox::start_if_possible(|_| {}).await else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    run(&s, &key, &id, UPGRADE_SERVER).await;
    sandbox::start_exec(&s, &key, &id, "nc -ll -p 7002 -e sh /srv/upgrade.sh").await;
    let forward = open(&s, &key, &id, json!({"port": 7002, "mode": "path"})).await;

    let (mut socket, head) = switched(&s, &key, &id).await;
    let lines: Vec<&str> = head.lines().map(str::trim_end).collect();
    assert!(
        lines.contains(&"upgrade: kiln-echo"),
        "the protocol asked reached the service and came back: {head}"
    );
    assert!(lines.contains(&"connection: upgrade"), "{head}");

    socket.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    socket.read_exact(&mut pong).await.expect("small echo");
    assert_eq!(&pong, b"ping");
    // Bytes both ways, in order, more than one read's worth.
    let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = socket.split();
    let (wrote, echoed) = tokio::join!(
        async {
            writer.write_all(&sent).await?;
            writer.flush().await
        },
        async {
            let mut echoed = vec![0u8; sent.len()];
            tokio::time::timeout(Duration::from_secs(20), reader.read_exact(&mut echoed))
                .await
                .map(|read| read.map(|_| echoed))
        }
    );
    wrote.expect("write through the switched connection");
    let echoed = echoed.expect("echo within 20 s").expect("read the echo");
    assert!(echoed == sent, "every byte came back, in order");

    // The caller's end of file reaches the service (cat ends), which closes its side.
    socket.shutdown().await.expect("shutdown");
    assert!(
        ends(&mut socket).await,
        "the service's close reached the caller"
    );

    // Closing the forward ends a switched connection still open.
    let (mut second, _) = switched(&s, &key, &id).await;
    second.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    second.read_exact(&mut pong).await.expect("echo");
    assert_eq!(&pong, b"ping");
    let forward_id = forward["forward_id"].as_str().expect("id");
    let (status, closed) = s
        .v1_as(
            &key,
            Method::DELETE,
            &format!("/instances/{id}/port-forwards/{forward_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert!(
        ends(&mut second).await,
        "the switched connection outlived its forward"
    );
}

/// A switched connection still counts under `ports.max_connections_per_forward` (a second
/// one is refused while it lasts) and ends after `ports.idle_timeout_secs` of silence,
/// which gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_keeps_its_place_under_the_cap_until_it_idles_out() {
    let Some(s) = sandbox::start_if_possible(|c| {
        c.ports.max_connections_per_forward = 1;
        c.ports.idle_timeout_secs = 2;
    })
    .await
    else {
        return;
    };
    let key = s.admin_key.clone();
    let id = sandbox::create_ready(&s, &key).await;
    run(&s, &key, &id, UPGRADE_SERVER).await;
    sandbox::start_exec(&s, &key, &id, "nc -ll -p 7002 -e sh /srv/upgrade.sh").await;
    open(&s, &key, &id, json!({"port": 7002, "mode": "path"})).await;

    let (mut first, _) = switched(&s, &key, &id).await;
    first.write_all(b"ping").await.expect("write");
    let mut pong = [0u8; 4];
    first.read_exact(&mut pong).await.expect("echo");
    assert_eq!(&pong, b"ping");
    let (_, refused) = ask_switch(&s, &key, &id).await;
    assert!(
        refused.starts_with("http/1.1 429"),
        "the switched connection holds the forward's only place: {refused}"
    );

    let silent = Instant::now();
    assert!(ends(&mut first).await, "a silent switched connection ends");
    assert!(
        silent.elapsed() >= Duration::from_millis(1500),
        "not before the idle timeout: {:?}",
        silent.elapsed()
    );
    let (mut again, _) = switched(&s, &key, &id).await;
    again.write_all(b"pong").await.expect("write");
    again.read_exact(&mut pong).await.expect("echo");
    assert_eq!(&pong, b"pong", "its place was given back");
}
