//! The egress proxy of one session: an HTTP proxy on the connections its sandbox opens
//! to `kiln_runtime::EGRESS_PROXY_ADDR`. `CONNECT host:port` (HTTPS, and anything else
//! that tunnels) and plain `GET http://host/…` requests are let through only to what the
//! session's [`NetworkPolicy`] lists and the server's outbound rules accept, each to the
//! addresses that were checked; anything else is answered 403 at once, saying why.
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kiln_runtime::{EgressHandler, EgressStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{EgressBook, NetworkPolicy};
use crate::outbound::OutboundPolicy;

/// Largest request head read before deciding.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to an allowed destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one session's egress serves at once. The agent's relay stops at as many,
/// but the sandbox's processes can also reach the socket directly: this bound is the
/// server's own. Past it a connection is closed at once.
pub const MAX_CONNECTIONS_PER_SESSION: usize = 64;

/// Serves one session's egress connections.
pub struct EgressProxy {
    pub session_id: String,
    pub policy: Arc<NetworkPolicy>,
    pub outbound: OutboundPolicy,
    pub book: Arc<EgressBook>,
    /// [`MAX_CONNECTIONS_PER_SESSION`] permits.
    pub open: Arc<tokio::sync::Semaphore>,
}

impl EgressProxy {
    pub fn new(
        session_id: String,
        policy: Arc<NetworkPolicy>,
        outbound: OutboundPolicy,
        book: Arc<EgressBook>,
    ) -> Self {
        EgressProxy {
            session_id,
            policy,
            outbound,
            book,
            open: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_SESSION)),
        }
    }
}

impl EgressHandler for EgressProxy {
    fn serve(&self, stream: EgressStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() else {
            // Dropping the stream closes it.
            return Box::pin(async {});
        };
        let proxy = Connection {
            session_id: self.session_id.clone(),
            policy: Arc::clone(&self.policy),
            outbound: self.outbound.clone(),
            book: Arc::clone(&self.book),
        };
        Box::pin(async move {
            proxy.serve(stream).await;
            drop(permit);
        })
    }
}

struct Connection {
    session_id: String,
    policy: Arc<NetworkPolicy>,
    outbound: OutboundPolicy,
    book: Arc<EgressBook>,
}

/// What the client asked for.
struct Request {
    host: String,
    port: u16,
    /// `None` for CONNECT; else the head to send upstream (origin-form, no proxy headers).
    forward: Option<Vec<u8>>,
}

impl Connection {
    async fn serve(self, mut client: EgressStream) {
        let (head, rest) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
            Ok(Ok(read)) => read,
            Ok(Err(why)) => return answer(&mut client, 400, &why).await,
            Err(_) => return answer(&mut client, 408, "no request head in time").await,
        };
        let request = match parse_request(&head) {
            Ok(request) => request,
            Err(why) => return answer(&mut client, 400, &why).await,
        };
        let (host, port) = (request.host.clone(), request.port);
        if !self.policy.allows(&host, port) {
            let why = format!(
                "{host}:{port} is not in this session's network allowlist (kiln: {})",
                self.policy.entries.join(", ")
            );
            self.book
                .blocked(&self.session_id, &host, port, "not in the allowlist");
            return answer(&mut client, 403, &why).await;
        }
        let url_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let vetted = match url::Url::parse(&format!("http://{url_host}:{port}/")) {
            Ok(url) => self.outbound.vet(&url).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let vetted = match vetted {
            Ok(vetted) => vetted,
            Err(why) => {
                self.book.blocked(&self.session_id, &host, port, &why);
                return answer(&mut client, 403, &why).await;
            }
        };
        let Some(mut upstream) = connect(&vetted.addrs, port).await else {
            return answer(
                &mut client,
                502,
                &format!("cannot connect to {host}:{port}"),
            )
            .await;
        };
        self.book.connected(&self.session_id);
        let sent = match &request.forward {
            None => {
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
            }
            Some(head) => upstream.write_all(head).await,
        };
        if sent.is_err() || upstream.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// The request head (through the blank line) and whatever came after it.
async fn read_head(client: &mut EgressStream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(format!("request head over {MAX_HEAD_BYTES} bytes"));
        }
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if n == 0 {
            return Err("the request ended before its head did".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `CONNECT host:port HTTP/1.x`, or `METHOD http://host[:port]/path HTTP/1.x`.
fn parse_request(head: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("not an HTTP request line: {first:?}"));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let url = url::Url::parse(&format!("http://{target}/"))
            .map_err(|_| format!("CONNECT needs host:port, not {target:?}"))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port()) else {
            return Err(format!("CONNECT needs host:port, not {target:?}"));
        };
        return Ok(Request {
            host: unbracket(host),
            port,
            forward: None,
        });
    }
    let url = url::Url::parse(target).map_err(|_| {
        format!("a proxy request names an absolute http:// URL, not {target:?} (HTTPS goes through CONNECT)")
    })?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// is forwarded as is; {} goes through CONNECT",
            url.scheme()
        ));
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(format!("no host in {target:?}"));
    };
    let mut path = url.path().to_string();
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut forward = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // One request per connection: the next one may be for another host.
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        forward.push_str(line);
        forward.push_str("\r\n");
    }
    forward.push_str("Connection: close\r\n\r\n");
    Ok(Request {
        host: unbracket(host),
        port,
        forward: Some(forward.into_bytes()),
    })
}

fn unbracket(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The first of the checked addresses that answers.
async fn connect(addrs: &[std::net::IpAddr], port: u16) -> Option<TcpStream> {
    for addr in addrs {
        let attempt = TcpStream::connect(SocketAddr::new(*addr, port));
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}

/// A short plain-text answer, then the connection closes.
async fn answer(client: &mut EgressStream, status: u16, why: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        _ => "Bad Gateway",
    };
    let body = format!("kiln egress: {why}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_serves_a_bounded_number_of_connections_at_once() {
        let policy = NetworkPolicy::parse(&["example.org:80".to_string()]).unwrap();
        let proxy = EgressProxy::new(
            "s".into(),
            Arc::new(policy),
            OutboundPolicy::default(),
            Arc::default(),
        );
        // Clients that never send their head hold their connection (and its permit).
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS_PER_SESSION {
            let (client, server) = tokio::io::duplex(64);
            held.push(client);
            tokio::spawn(proxy.serve(Box::new(server)));
        }
        tokio::task::yield_now().await;
        let (mut client, server) = tokio::io::duplex(64);
        proxy.serve(Box::new(server)).await;
        let mut got = Vec::new();
        let read = client.read_to_end(&mut got).await;
        assert!(
            read.is_ok() && got.is_empty(),
            "one more is closed at once: {got:?}"
        );
        // One ends, one more is served (and answered: a bad request line here).
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (mut client, server) = tokio::io::duplex(1024);
        tokio::spawn(proxy.serve(Box::new(server)));
        client.write_all(b"nonsense\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    #[test]
    fn requests_parse_into_destinations() {
        let connect =
            parse_request(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n").unwrap();
        assert_eq!((connect.host.as_str(), connect.port), ("pypi.org", 443));
        assert!(connect.forward.is_none());
        let v6 = parse_request(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8443));
        let get = parse_request(
            b"GET http://Data.Example:8080/a/b?c=d HTTP/1.1\r\nHost: data.example:8080\r\n\
              Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!((get.host.as_str(), get.port), ("data.example", 8080));
        let sent = String::from_utf8(get.forward.unwrap()).unwrap();
        assert_eq!(
            sent,
            "GET /a/b?c=d HTTP/1.1\r\nHost: data.example:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        for bad in [
            &b"GET /relative HTTP/1.1\r\n\r\n"[..],
            b"CONNECT pypi.org HTTP/1.1\r\n\r\n",
            b"GET https://pypi.org/ HTTP/1.1\r\n\r\n",
            b"nonsense\r\n\r\n",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
