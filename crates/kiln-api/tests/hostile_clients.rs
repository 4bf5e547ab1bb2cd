//! The server holds against hostile clients: a flood of half-open connections, one
//! address holding too many connections, one key sending too many requests. Everything
//! runs on loopback; 127.0.0.2–127.0.0.6 stand for other client addresses (all of 127/8
//! is local). The flood and caps are what a real server does: `kiln_api::serve` on a
//! real socket, with the same accept loop as `kiln serve`.
use crate::{common, sandbox};

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{bearer, json, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

const FLOOD: usize = 5_000;
const FLOOD_SOURCES: u8 = 5;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Soft RLIMIT_NOFILE up to the hard limit (and the hard limit up, as root): the flood
/// needs a descriptor on both ends of each connection, in this one process.
fn raise_fd_limit(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = hard.max(needed);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, want)
            .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))
            .expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= needed,
        "need {needed} file descriptors, have {soft}"
    );
}

fn server_addr(s: &TestServer) -> SocketAddr {
    s.base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .parse()
        .expect("server address")
}

async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(server).await
}

/// `GET path` over a fresh connection from `source`, `Connection: close`: the raw
/// response, or `None` when the server closed without answering anything.
async fn raw_get(source: Ipv4Addr, server: SocketAddr, path: &str) -> Option<String> {
    let mut stream = connect_from(source, server).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: kiln\r\nconnection: close\r\n\r\n");
    // A refused connection may be closed before the request is even written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    (!response.is_empty()).then(|| String::from_utf8_lossy(&response).into_owned())
}

/// A connection from `source` the server has admitted and keeps open: a keep-alive
/// request on it was answered 200. A refusal (a slot not yet freed by a connection that
/// just ended, or an accept the loaded server has not reached) is retried for 5 s.
async fn held_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let started = Instant::now();
    loop {
        let mut stream = connect_from(source, server).await.expect("connect");
        let request = "GET /api/v1/health HTTP/1.1\r\nhost: kiln\r\n\r\n";
        let answered = match stream.write_all(request.as_bytes()).await {
            Ok(()) => read_head(&mut stream).await,
            Err(_) => String::new(),
        };
        if answered.starts_with("HTTP/1.1 200") {
            return stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a connection from {source} is never admitted: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A response's head and its `content-length` body, leaving the connection open; what
/// came before EOF or 5 s if the response never completes.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if response.len() >= end + 4 + length {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

/// A health request from `source` until it is not served (refused, or a 503), for at most
/// 5 s; the last answer.
async fn refused_eventually(source: Ipv4Addr, server: SocketAddr) -> Option<String> {
    let started = Instant::now();
    loop {
        let answer = raw_get(source, server, "/api/v1/health").await;
        let served = answer
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"));
        if !served || started.elapsed() > Duration::from_secs(5) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server closes `stream` (EOF or reset), whatever it writes first.
async fn wait_closed(mut stream: TcpStream) {
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `/health` over a fresh connection (a new client must get in), and the admin's
/// `/users/me`; `exec` too when a session is given. Each must answer within 1 s.
async fn probe(s: &TestServer, fresh: &reqwest::Client, session: Option<&str>) -> Duration {
    let started = Instant::now();
    let health = fresh
        .get(format!("{}/health", s.base))
        .send()
        .await
        .expect("health answers");
    assert_eq!(health.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "/health took {took:?}");
    let started = Instant::now();
    let me = s.get_ok(&s.admin_key, "/users/me").await;
    assert!(me["user_id"].is_string(), "{me}");
    let took_me = started.elapsed();
    assert!(
        took_me < Duration::from_secs(1),
        "/users/me took {took_me:?}"
    );
    if let Some(id) = session {
        let started = Instant::now();
        let iid = sandbox::start_exec(s, &s.admin_key, id, "echo hi").await;
        let done = s
            .get_ok(&s.admin_key, &format!("/sessions/{id}/interactions/{iid}"))
            .await;
        assert_eq!(done["exit_code"], 0, "{done}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "exec took {took:?}");
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_connections_neither_blocks_health_nor_outlives_the_header_timeout() {
    raise_fd_limit(3 * FLOOD as u64);
    let tweak = |c: &mut kiln_config::Config| {
        c.server.header_read_timeout_secs = HEADER_TIMEOUT.as_secs();
        c.server.max_connections_per_ip = FLOOD / usize::from(FLOOD_SOURCES);
    };
    // An exec needs a real sandbox; without the prerequisites the rest still runs.
    let with_sandbox = sandbox::prerequisites();
    let s = if with_sandbox {
        sandbox::start(tweak).await
    } else {
        TestServer::start_with(tweak).await
    };
    let session = if with_sandbox {
        Some(sandbox::create_ready(&s, &s.admin_key).await)
    } else {
        eprintln!("no sandbox here: the exec under the flood is not checked");
        None
    };
    let addr = server_addr(&s);
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut baseline: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        baseline.push(probe(&s, &fresh, session.as_deref()).await);
    }
    let rss_before = rss_kib();

    // The flood (every connection sends half a request line, then nothing), probed
    // from the first connection until the server has closed the last.
    let flooding = std::sync::atomic::AtomicBool::new(true);
    let probing = async {
        let mut took = Vec::new();
        while flooding.load(std::sync::atomic::Ordering::Relaxed) {
            took.push(probe(&s, &fresh, session.as_deref()).await);
        }
        took
    };
    let flood = async {
        let result = flood_and_wait(addr).await;
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        result
    };
    let (mut under_flood, outcome) = tokio::join!(probing, flood);

    baseline.sort();
    under_flood.sort();
    eprintln!(
        "flood of {FLOOD}: opened in {:?}, {} open at once, server+client RSS {} -> {} MiB; \
         /health without: p50 {:?} max {:?} (n={}); under the flood: p50 {:?} max {:?} \
         (n={}); all closed {:?} after the first was opened",
        outcome.opened_in,
        outcome.open_at_once,
        rss_before / 1024,
        outcome.rss_kib / 1024,
        percentile(&baseline, 0.5),
        percentile(&baseline, 1.0),
        baseline.len(),
        percentile(&under_flood, 0.5),
        percentile(&under_flood, 1.0),
        under_flood.len(),
        outcome.closed_after,
    );
    assert_eq!(
        outcome.left_open, 0,
        "half-open connections still open {:?} after the flood began",
        outcome.closed_after
    );
    if outcome.opened_in < HEADER_TIMEOUT {
        assert_eq!(
            outcome.open_at_once, FLOOD,
            "the whole flood was open at once"
        );
    }
    assert!(probe(&s, &fresh, session.as_deref()).await < Duration::from_secs(1));
}

struct Flood {
    opened_in: Duration,
    /// Flood connections still open when the last was opened.
    open_at_once: usize,
    rss_kib: u64,
    closed_after: Duration,
    left_open: usize,
}

/// Opens the flood from [`FLOOD_SOURCES`] addresses, then waits (bounded) until the
/// server has closed every connection.
async fn flood_and_wait(addr: SocketAddr) -> Flood {
    const OPENERS_PER_SOURCE: usize = 10;
    let per_opener = FLOOD / usize::from(FLOOD_SOURCES) / OPENERS_PER_SOURCE;
    let opening = Instant::now();
    let mut openers = JoinSet::new();
    for source in 0..FLOOD_SOURCES {
        for _ in 0..OPENERS_PER_SOURCE {
            openers.spawn(async move {
                let source = Ipv4Addr::new(127, 0, 0, 2 + source);
                let mut streams = Vec::new();
                for _ in 0..per_opener {
                    let mut stream = connect_from(source, addr).await.expect("connect");
                    stream
                        .write_all(b"GET /api/v1/health HT")
                        .await
                        .expect("write");
                    streams.push(stream);
                }
                streams
            });
        }
    }
    let mut flood = Vec::with_capacity(FLOOD);
    while let Some(streams) = openers.join_next().await {
        flood.extend(streams.expect("opener"));
    }
    let opened_in = opening.elapsed();
    assert_eq!(flood.len(), FLOOD);
    let open_at_once = flood
        .iter()
        .filter(|s| {
            let mut buf = [0u8; 1];
            matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    let rss_kib = rss_kib();
    let mut closers = JoinSet::new();
    for stream in flood {
        closers.spawn(wait_closed(stream));
    }
    let deadline = opened_in + HEADER_TIMEOUT + Duration::from_secs(2);
    let _ = tokio::time::timeout(deadline.saturating_sub(opening.elapsed()), async {
        while closers.join_next().await.is_some() {}
    })
    .await;
    let closed_after = opening.elapsed();
    let left_open = closers.len();
    closers.abort_all();
    Flood {
        opened_in,
        open_at_once,
        rss_kib,
        closed_after,
        left_open,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_or_total_cap_are_closed_at_once() {
    let s = TestServer::start_with(|c| {
        c.server.max_connections = 5;
        c.server.max_connections_per_ip = 3;
    })
    .await;
    let addr = server_addr(&s);
    let (a, b, c) = (
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 2),
    );
    // Each held connection is known to be admitted (a request on it was served), so the
    // caps below are reached however late the accept loop or a freed slot runs.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(held_from(a, addr).await);
    }
    let refused = refused_eventually(a, addr).await;
    assert!(
        refused
            .as_deref()
            .is_none_or(|r| r.starts_with("HTTP/1.1 503") && r.contains("too_many_connections")),
        "the 4th connection from one address is refused: {refused:?}"
    );
    let served = raw_get(c, addr, "/api/v1/health").await.unwrap_or_default();
    assert!(
        served.starts_with("HTTP/1.1 200"),
        "another address is served: {served}"
    );

    for _ in 0..2 {
        held.push(held_from(b, addr).await);
    }
    let refused = refused_eventually(c, addr).await;
    assert!(
        refused
            .as_deref()
            .is_none_or(|r| r.starts_with("HTTP/1.1 503")),
        "over the total cap: {refused:?}"
    );

    // A closed connection frees its place.
    drop(held.remove(0));
    let started = Instant::now();
    loop {
        let served = raw_get(a, addr, "/api/v1/health").await.unwrap_or_default();
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "place never freed: {served}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_get_429_with_retry_after_per_key_and_per_address() {
    let s = TestServer::start_with(|c| {
        c.server.key_requests_per_sec = 1;
        c.server.key_burst = 3;
        c.server.ip_requests_per_sec = 1;
        c.server.ip_burst = 2;
    })
    .await;
    for _ in 0..3 {
        s.get_ok(&s.admin_key, "/users/me").await;
    }
    let limited = s
        .get("/users/me")
        .header("Authorization", bearer(&s.admin_key))
        .send()
        .await
        .expect("send");
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After in whole seconds");
    let (status, body) = json(limited).await;
    common::assert_error(status, &body, 429, "rate_limited");
    assert!((1..=2).contains(&retry_after), "{retry_after}");

    let (_, other) = s.user("other").await;
    s.get_ok(&other, "/users/me").await;
    for _ in 0..5 {
        let health = s.get("/health").send().await.expect("health");
        assert_eq!(health.status(), 200, "/health is exempt");
    }

    // Without a valid credential, the client address is what is limited.
    for _ in 0..2 {
        let (status, _) = s.get_as("kiln_not_a_key", "/users/me").await;
        assert_eq!(status, 401);
    }
    let (status, body) = s.get_as("kiln_not_a_key", "/users/me").await;
    common::assert_error(status, &body, 429, "rate_limited");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let response = elsewhere
        .get(format!("{}/users/me", s.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 401, "another address has its own bucket");

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    s.get_ok(&s.admin_key, "/users/me").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let s = TestServer::start_with(|c| {
        c.server.ip_requests_per_sec = 1;
        c.server.ip_burst = 1;
        c.server.trusted_proxies = vec!["127.0.0.3/32".parse().expect("net")];
    })
    .await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .expect("client")
    };
    let status = |client: reqwest::Client, forwarded: &'static str| {
        let url = format!("{}/users/me", s.base);
        async move {
            client
                .get(url)
                .header("Authorization", "Bearer kiln_not_a_key")
                .header("X-Forwarded-For", forwarded)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    let proxy = from(3);
    assert_eq!(status(proxy.clone(), "198.51.100.1").await, 401);
    assert_eq!(
        status(proxy.clone(), "198.51.100.1").await,
        429,
        "same client"
    );
    assert_eq!(
        status(proxy.clone(), "198.51.100.2").await,
        401,
        "another client behind the same proxy has its own bucket"
    );
    // A client that is not a trusted proxy cannot pick its bucket with the header.
    let direct = from(4);
    assert_eq!(status(direct.clone(), "198.51.100.3").await, 401);
    assert_eq!(status(direct, "198.51.100.4").await, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_dropped_after_the_idle_timeout() {
    let s = TestServer::start_with(|c| {
        c.sessions.long_poll_secs = 1;
        c.server.idle_timeout_secs = 2;
    })
    .await;
    let mut stream = connect_from(Ipv4Addr::LOCALHOST, server_addr(&s))
        .await
        .expect("connect");
    // A whole head (so the header timeout is out of play), then a tenth of the body.
    let request = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nhost: kiln\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"dataset\"",
        s.admin_key
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(6), wait_closed(stream))
        .await
        .expect("the stalled connection is closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "closed too early: {after:?}"
    );
    s.get_ok(&s.admin_key, "/users/me").await;
}

/// With a certificate the listener speaks TLS only, and the caps and timeouts hold as
/// before: connections are admitted under the per-address cap before any handshake (one
/// over it gets the plain refusal at once), a client that connects and never finishes
/// its handshake is closed at the header-read timeout, which frees its place, a plain
/// HTTP request gets no HTTP answer, and a client that trusts the CA is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_admits_before_the_handshake_and_bounds_it_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(pki) = kiln_test_support::pki::make(dir.path(), &["127.0.0.1"]) else {
        return;
    };
    let s = TestServer::start_with(|c| {
        c.server.header_read_timeout_secs = HEADER_TIMEOUT.as_secs();
        c.server.max_connections_per_ip = 2;
        c.server.tls_cert_file = Some(pki.cert.clone());
        c.server.tls_key_file = Some(pki.key.clone());
    })
    .await;
    let addr = server_addr(&s);
    let silent_source = Ipv4Addr::new(127, 0, 0, 5);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).expect("read the CA"))
        .expect("the CA");
    let trusting = |source: Ipv4Addr| {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .local_address(std::net::IpAddr::V4(source))
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    };
    let health = format!("https://{addr}/api/v1/health");
    let served = trusting(Ipv4Addr::new(127, 0, 0, 6))
        .get(&health)
        .send()
        .await
        .expect("an HTTPS request is served");
    assert_eq!(served.status(), 200);

    // Two connections that never start their handshake hold the address's two places.
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(connect_from(silent_source, addr).await.expect("connect"));
    }
    // A third is refused at once, in plain HTTP (nothing is written to it first, so the
    // close is not a reset that could swallow the refusal).
    let mut refusal = String::new();
    while opened.elapsed() < HEADER_TIMEOUT / 2 && !refusal.starts_with("HTTP/1.1 503") {
        let mut third = connect_from(silent_source, addr).await.expect("connect");
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(200), third.read_to_end(&mut answer)).await;
        refusal = String::from_utf8_lossy(&answer).into_owned();
    }
    assert!(
        refusal.starts_with("HTTP/1.1 503") && refusal.contains("too_many_connections"),
        "a third connection from the address is refused before any handshake: {refusal:?}"
    );

    // Plain HTTP from another address: admitted, but not answered in HTTP.
    let plain = raw_get(Ipv4Addr::new(127, 0, 0, 7), addr, "/api/v1/health").await;
    assert!(
        !plain.as_deref().is_some_and(|p| p.starts_with("HTTP/")),
        "plain HTTP got an HTTP answer: {plain:?}"
    );

    for stream in silent {
        tokio::time::timeout(HEADER_TIMEOUT * 3, wait_closed(stream))
            .await
            .expect("a silent connection is closed");
    }
    let after = opened.elapsed();
    assert!(
        after >= HEADER_TIMEOUT.mul_f64(0.9),
        "closed before the header timeout: {after:?}"
    );
    // Their places are free again (the slot is released just after the close).
    let client = trusting(silent_source);
    let freed = Instant::now();
    loop {
        match client.get(&health).send().await {
            Ok(served) if served.status() == 200 => break,
            answer => assert!(
                freed.elapsed() < Duration::from_secs(3),
                "the address's places were never freed: {answer:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
