//! The accept loop outlives running out of file descriptors, without spinning. Alone in
//! its own test binary: it lowers this process's RLIMIT_NOFILE for a moment.
mod common;

use std::time::Duration;

use common::TestServer;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emfile_makes_the_accept_loop_pause_not_spin_or_die() {
    let s = TestServer::start().await;
    s.get("/health").send().await.expect("health");
    let addr: std::net::SocketAddr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .parse()
        .expect("address");
    // Client sockets exist before the limit drops: connecting needs no new descriptor,
    // accepting does.
    let sockets: Vec<TcpSocket> = (0..4)
        .map(|_| TcpSocket::new_v4().expect("socket"))
        .collect();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, open_fds(), hard).expect("lower the limit");
    let cpu_before = cpu_time();
    let mut streams = Vec::new();
    for socket in sockets {
        streams.push(
            socket
                .connect(addr)
                .await
                .expect("connect (the backlog takes it)"),
        );
    }
    let window = Duration::from_millis(1500);
    tokio::time::sleep(window).await;
    let cpu = cpu_time() - cpu_before;
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).expect("restore the limit");
    eprintln!("CPU time of the whole process while accept failed: {cpu:?} in {window:?}");
    // Backing off, the loop wakes ~10 times (≈ 2 ms of CPU here); spinning, it took
    // 240–530 ms on a 2-core machine loaded 15 deep (more on an idle one).
    assert!(
        cpu < Duration::from_millis(100),
        "the accept loop spun: {cpu:?} of CPU in {window:?}"
    );

    // Descriptors are back: the waiting connections are taken and served.
    let mut stream = streams.pop().expect("a stream");
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nhost: kiln\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut response))
        .await
        .expect("answered once descriptors are back")
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}
