//! The connection layer: our own accept loop over hyper's HTTP/1.1, so that hostile
//! clients cannot hold the server. A client must send its request head within the
//! header-read timeout (hyper's timer also closes idle keep-alive connections that way);
//! a connection silent both ways for the idle timeout is dropped (stalled uploads,
//! clients that stop reading); connections over the total or per-address cap are closed
//! at once, before any parsing; and `accept` errors (EMFILE, ENFILE, ENOBUFS) make the
//! loop back off instead of spinning or dying. With a certificate (`[server]
//! tls_cert_file`), each admitted connection first completes a TLS handshake
//! (`tls.rs`), bounded by the header-read timeout, then is served the same way.
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kiln_config::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower_http::add_extension::AddExtension;

use crate::tls;

/// Largest request head (request line and headers) accepted; more is a 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest pause of the accept loop after an `accept` error.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
/// What a connection over a cap reads before it is closed: written without waiting
/// (a full send buffer just loses it), never parsed against anything.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: application/json\r\nretry-after: 1\r\ncontent-length: 80\r\n\r\n\
{\"detail\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections\"}}";

/// The key of a client address for caps and rate limits: IPv4 as is, IPv6 by its /64
/// (one host usually holds a whole /64), IPv4-mapped IPv6 as the IPv4 address.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// The address a request is limited by: its peer's, or, when the peer is one of
/// `trusted_proxies`, the right-most `X-Forwarded-For` entry that is not itself a trusted
/// proxy (entries to its left were written by the client and prove nothing). A header
/// that does not parse leaves the peer's address.
pub(crate) fn client_address(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    config: &ServerConfig,
) -> IpAddr {
    if !config.is_trusted_proxy(peer) {
        return peer;
    }
    let mut entries: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return peer;
        };
        entries.extend(value.split(',').map(str::trim));
    }
    for entry in entries.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if config.is_trusted_proxy(ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

/// Open connections, in total and per client address.
struct Counts {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; its drop frees the place.
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Counts {
    /// Admits a connection from `ip`; a trusted proxy's connections (many clients behind
    /// one address) count only against the total.
    fn admit(self: &Arc<Self>, ip: IpAddr, trusted_proxy: bool) -> Option<Slot> {
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || (*mine >= self.max_per_ip && !trusted_proxy) {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_ip) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_ip.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` (in TLS with `tls`) until `shutdown` resolves, then stops
/// accepting, asks every connection to finish its current exchange and close, and waits
/// for them.
pub(crate) async fn serve_router(
    app: Router,
    listener: TcpListener,
    limits: &ServerConfig,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let counts = Arc::new(Counts {
        max_total: limits.max_connections,
        max_per_ip: limits.max_connections_per_ip,
        open: Mutex::new((0, HashMap::new())),
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs))
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let handshake_limit = Duration::from_secs(limits.header_read_timeout_secs);
    // Dropping `stop` tells connections to finish; every connection holds a `done`
    // receiver, so `done_tx.closed()` resolves when the last one has ended.
    let (stop, stop_rx) = watch::channel(());
    let (done_tx, done) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or buffers: the pending connection stays in the
                // backlog, so retrying at once would spin. Pause, growing, and go on.
                if backoff.is_zero() {
                    tracing::warn!(error = %e, "accept failed; backing off");
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let Some(slot) = counts.admit(peer.ip(), limits.is_trusted_proxy(peer.ip())) else {
            // Nothing is read from it and nothing waited for: a refused client costs one
            // non-blocking write and a close.
            let _ = stream.try_write(REFUSAL);
            drop(stream);
            tracing::debug!(%peer, "connection refused: over the connection cap");
            continue;
        };
        // Streamed responses (SSE) write small frames after the head: with Nagle on, each
        // waits for the client's delayed ACK of the previous one (≈ 40 ms).
        let _ = stream.set_nodelay(true);
        // Every request of the connection holds its slot too: a connection upgraded to
        // another protocol (a WebSocket through a port forward) keeps its place under the
        // caps after hyper hands it over, for as long as whoever carries it keeps the slot.
        let slot = ConnectionSlot {
            _slot: Arc::new(slot),
        };
        let service = AddExtension::new(
            AddExtension::new(app.clone(), ConnectInfo(peer)),
            slot.clone(),
        );
        let activity = Activity::default();
        let tracked = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        let mut stop_rx = stop_rx.clone();
        let done = done.clone();
        let http = http.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The handshake runs here, not in the accept loop, so a slow client holds
            // only its own task (and its place under the caps, until the limit).
            let io = tokio::select! {
                io = tls::open(tls.as_ref(), tracked, handshake_limit) => io,
                // A graceful stop does not wait for handshakes.
                _ = stop_rx.changed() => None,
            };
            if let Some(io) = io {
                let conn = http
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
                    .with_upgrades();
                drive(conn, activity, idle, stop_rx).await;
            }
            drop((slot, done));
        });
    }
    drop(listener);
    drop(stop);
    drop(done);
    drop(stop_rx);
    done_tx.closed().await;
    Ok(())
}

/// One client connection: the router, told the client's address.
type Conn = http1::UpgradeableConnection<
    TokioIo<tls::Stream<Tracked>>,
    TowerToHyperService<
        AddExtension<AddExtension<Router, ConnectInfo<SocketAddr>>, ConnectionSlot>,
    >,
>;

/// A connection's place under the connection caps, in each of its requests' extensions:
/// freed when the connection and whatever took it over (an upgrade) have all let go.
#[derive(Clone)]
pub(crate) struct ConnectionSlot {
    _slot: Arc<Slot>,
}

/// Runs one connection to its end: the client's close, an error or timeout, a graceful
/// stop, or `idle` without a byte either way.
async fn drive(conn: Conn, activity: Activity, idle: Duration, mut stop: watch::Receiver<()>) {
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last() + idle <= Instant::now() {
                    tracing::debug!("closing a connection silent for {idle:?}");
                    return;
                }
            }
        }
    }
}

/// When bytes last moved on a connection.
#[derive(Clone)]
struct Activity {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A TCP stream that records when bytes move.
struct Tracked {
    inner: TcpStream,
    activity: Activity,
}

impl Tracked {
    fn moved<T>(&self, result: &Poll<io::Result<T>>, bytes: impl FnOnce(&T) -> usize) {
        if let Poll::Ready(Ok(value)) = result {
            if bytes(value) > 0 {
                self.activity.touch();
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let after = buf.filled().len();
        self.moved(&result, |()| after - before);
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.moved(&result, |n| *n);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moved(&result, |n| *n);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Errors that concern one connection only (the client gave up before we took it).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total_and_free_on_drop() {
        let counts = Arc::new(Counts {
            max_total: 3,
            max_per_ip: 2,
            open: Mutex::new((0, HashMap::new())),
        });
        let a: IpAddr = "127.0.0.2".parse().expect("ip");
        let b: IpAddr = "::ffff:127.0.0.3".parse().expect("ip");
        let first = counts.admit(a, false).expect("first");
        let _second = counts.admit(a, false).expect("second");
        assert!(counts.admit(a, false).is_none(), "per-address cap");
        let _third = counts.admit(b, false).expect("another address");
        assert!(
            counts
                .admit("127.0.0.4".parse().expect("ip"), false)
                .is_none(),
            "total cap"
        );
        drop(first);
        let proxy = Arc::new(Counts {
            max_total: 3,
            max_per_ip: 1,
            open: Mutex::new((0, HashMap::new())),
        });
        let held: Vec<Slot> = (0..3)
            .map(|_| {
                proxy
                    .admit(a, true)
                    .expect("a trusted proxy is not capped per address")
            })
            .collect();
        assert!(proxy.admit(a, true).is_none(), "but still in total");
        drop(held);
        assert!(
            counts.admit(a, false).is_some(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSAL).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(body["detail"]["code"], "too_many_connections");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let config = ServerConfig {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("net"),
                "10.0.0.0/8".parse().expect("net"),
            ],
            ..ServerConfig::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let headers = |values: &[&str]| {
            let mut map = axum::http::HeaderMap::new();
            for v in values {
                map.append("x-forwarded-for", v.parse().expect("header value"));
            }
            map
        };
        let spoofed = headers(&["6.6.6.6"]);
        // An untrusted peer cannot choose its address.
        assert_eq!(
            client_address(ip("192.0.2.9"), &spoofed, &config),
            ip("192.0.2.9")
        );
        // Behind the proxy: the right-most entry the proxy did not write itself.
        assert_eq!(
            client_address(ip("127.0.0.1"), &spoofed, &config),
            ip("6.6.6.6")
        );
        let chain = headers(&["1.1.1.1, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &chain, &config),
            ip("203.0.113.5")
        );
        // No header, or garbage: the proxy's own address.
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers(&[]), &config),
            ip("127.0.0.1")
        );
        let garbage = headers(&["1.1.1.1, nonsense"]);
        assert_eq!(
            client_address(ip("127.0.0.1"), &garbage, &config),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let two: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(one), client_key(two));
        assert_ne!(client_key(one), client_key(other));
        assert_eq!(
            client_key("::ffff:10.0.0.1".parse().expect("ip")),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }
}
