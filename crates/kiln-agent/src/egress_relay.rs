//! `--egress ADDR=SOCKET` or `--egress ADDR=tcp:HOST:PORT`: a TCP listener inside the
//! sandbox's network namespace (the address HTTP(S) proxies point at) whose connections
//! are carried, byte for byte, to the server: its egress socket in the run directory
//! (local, Docker), or its egress listener over TCP (Kubernetes), where each connection
//! first sends the line of [`kiln_protocol::egress_preamble`] (the sandbox's id from
//! `--sandbox-id`, its agent secret) so the shared listener knows whose it is. Which
//! hosts may be reached is decided there; this only relays, at most [`MAX_RELAYS`]
//! connections at once (each costs two threads of the sandbox's own pids limit). The
//! secret goes to the server only, never to the sandbox's side of a connection.
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Connections relayed at once; more are closed at once.
pub const MAX_RELAYS: usize = 64;

/// How long a TCP connect to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the relay carries connections to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// The server's egress socket (a path shared with the server).
    Socket(PathBuf),
    /// The server's egress listener, `host:port`; each connection starts with the
    /// preamble.
    Tcp(String),
}

/// Where to listen inside, and where to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRelay {
    pub listen: SocketAddr,
    pub upstream: Upstream,
}

/// Who this sandbox is to a TCP upstream: `--sandbox-id` and the agent's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EgressRelay {
    /// `127.0.0.1:3128=/.kiln/run/egress.sock` or `127.0.0.1:3128=tcp:10.0.0.5:3129`.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let (listen, target) = arg.split_once('=').ok_or_else(|| {
            format!("--egress {arg}: expected ADDRESS:PORT=SOCKET or ADDRESS:PORT=tcp:HOST:PORT")
        })?;
        let listen = listen
            .parse()
            .map_err(|err| format!("--egress {arg}: {err}"))?;
        let upstream = match target.strip_prefix("tcp:") {
            Some(hostport) => {
                let port_ok = hostport
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(format!("--egress {arg}: expected tcp:HOST:PORT"));
                }
                Upstream::Tcp(hostport.to_string())
            }
            None if target.is_empty() => return Err(format!("--egress {arg}: no socket path")),
            None => Upstream::Socket(PathBuf::from(target)),
        };
        Ok(EgressRelay { listen, upstream })
    }

    /// Binds the listener and relays on a thread of its own; a TCP upstream needs
    /// `credentials`.
    pub fn start(self, credentials: Option<Credentials>) -> Result<(), String> {
        let preamble = match (&self.upstream, credentials) {
            (Upstream::Socket(_), _) => None,
            (Upstream::Tcp(_), Some(c)) => Some(kiln_protocol::egress_preamble(&c.id, &c.secret)),
            (Upstream::Tcp(_), None) => {
                return Err("--egress to tcp: needs --sandbox-id and KILN_AGENT_SECRET".into())
            }
        };
        let listener = TcpListener::bind(self.listen)
            .map_err(|err| format!("cannot listen on {} for egress: {err}", self.listen))?;
        let running = Arc::new(AtomicUsize::new(0));
        let upstream = Arc::new((self.upstream, preamble));
        thread::Builder::new()
            .name("egress".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(tcp) = conn else { continue };
                    if running.fetch_add(1, Ordering::SeqCst) >= MAX_RELAYS {
                        running.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let upstream = Arc::clone(&upstream);
                    let spawned = thread::Builder::new().name("egress-relay".into()).spawn({
                        let running = Arc::clone(&running);
                        move || {
                            let (target, preamble) = &*upstream;
                            relay(tcp, target, preamble.as_deref());
                            running.fetch_sub(1, Ordering::SeqCst);
                        }
                    });
                    if spawned.is_err() {
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|err| format!("cannot start the egress thread: {err}"))?;
        Ok(())
    }
}

/// A stream whose write half can be closed alone.
trait HalfClose: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn close_write(&self);
}

impl HalfClose for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl HalfClose for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }
    fn close_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Connects to `target` (sending `preamble` first) and carries `tcp` both ways.
fn relay(tcp: TcpStream, target: &Upstream, preamble: Option<&str>) {
    match target {
        Upstream::Socket(path) => {
            if let Ok(unix) = UnixStream::connect(path) {
                pipe(tcp, unix);
            }
        }
        Upstream::Tcp(hostport) => {
            let Some(mut up) = connect_tcp(hostport) else {
                return;
            };
            let _ = up.set_nodelay(true);
            if up
                .write_all(preamble.unwrap_or_default().as_bytes())
                .is_ok()
            {
                pipe(tcp, up);
            }
        }
    }
}

/// The first of `hostport`'s addresses that accepts a connection.
fn connect_tcp(hostport: &str) -> Option<TcpStream> {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .ok()?
        .find_map(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).ok())
}

/// Both directions until each side has closed its half (a refused upstream: closed).
fn pipe<U: HalfClose>(tcp: TcpStream, upstream: U) {
    let _ = tcp.set_nodelay(true);
    let (Ok(mut tcp_in), Ok(mut up_out)) = (tcp.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = thread::Builder::new()
        .name("egress-up".into())
        .spawn(move || {
            let _ = io::copy(&mut tcp_in, &mut up_out);
            up_out.close_write();
        });
    let (mut up_in, mut tcp_out) = (upstream, tcp);
    let _ = io::copy(&mut up_in, &mut tcp_out);
    let _ = tcp_out.shutdown(Shutdown::Write);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixListener;

    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn arguments_parse_and_bad_ones_say_why() {
        let relay = EgressRelay::parse("127.0.0.1:3128=/.kiln/run/egress.sock").unwrap();
        assert_eq!(relay.listen, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(
            relay.upstream,
            Upstream::Socket(PathBuf::from("/.kiln/run/egress.sock"))
        );
        let relay = EgressRelay::parse("127.0.0.1:3128=tcp:10.0.0.5:3129").unwrap();
        assert_eq!(relay.upstream, Upstream::Tcp("10.0.0.5:3129".into()));
        let relay = EgressRelay::parse("127.0.0.1:3128=tcp:kiln.svc:3129").unwrap();
        assert_eq!(relay.upstream, Upstream::Tcp("kiln.svc:3129".into()));
        for bad in [
            "127.0.0.1:3128",
            "nowhere=/x",
            "127.0.0.1:3128=",
            "127.0.0.1:3128=tcp:10.0.0.5",
            "127.0.0.1:3128=tcp::3129",
            "127.0.0.1:3128=tcp:10.0.0.5:99999",
        ] {
            assert!(EgressRelay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tcp_upstream_needs_credentials() {
        let relay = EgressRelay::parse("127.0.0.1:0=tcp:127.0.0.1:9").unwrap();
        assert!(relay.start(None).is_err());
    }

    #[test]
    fn bytes_go_both_ways_and_ends_pass() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let server = UnixListener::bind(&socket).unwrap();
        let listen = free_addr();
        EgressRelay {
            listen,
            upstream: Upstream::Socket(socket.clone()),
        }
        .start(None)
        .unwrap();
        let echo = thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(&got).unwrap();
            conn.write_all(b"!").unwrap();
        });
        let mut client = TcpStream::connect(listen).unwrap();
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello!");
        echo.join().unwrap();
    }

    #[test]
    fn a_tcp_upstream_gets_the_preamble_then_the_bytes() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let listen = free_addr();
        EgressRelay::parse(&format!("{listen}=tcp:{target}"))
            .unwrap()
            .start(Some(Credentials {
                id: "sb_1".into(),
                secret: "0123456789abcdef".into(),
            }))
            .unwrap();
        let echo = thread::spawn(move || {
            let (conn, _) = server.accept().unwrap();
            let mut conn = BufReader::new(conn);
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).unwrap();
            conn.get_mut().write_all(&rest).unwrap();
            line
        });
        let mut client = TcpStream::connect(listen).unwrap();
        client.write_all(b"GET / HTTP/1.0").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        // The sandbox's side sees only its own bytes; the server got who it is first.
        assert_eq!(back, b"GET / HTTP/1.0");
        assert_eq!(
            echo.join().unwrap(),
            "KILN-EGRESS/1 sb_1 0123456789abcdef\n"
        );
    }
}
