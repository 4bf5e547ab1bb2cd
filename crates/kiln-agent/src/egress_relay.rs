//! `--egress ADDR=SOCKET`: a TCP listener inside the sandbox's network namespace (the
//! address HTTP(S) proxies point at) whose connections are carried, byte for byte, to the
//! server's egress socket in the run directory. Which hosts may be reached is decided
//! there; this only relays, at most [`MAX_RELAYS`] connections at once (each costs two
//! threads of the sandbox's own pids limit).
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Connections relayed at once; more are closed at once.
pub const MAX_RELAYS: usize = 64;

/// Where to listen inside, and the socket to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRelay {
    pub listen: SocketAddr,
    pub socket: PathBuf,
}

impl EgressRelay {
    /// `127.0.0.1:3128=/.kiln/run/egress.sock`.
    pub fn parse(arg: &str) -> Result<Self, String> {
        let (listen, socket) = arg
            .split_once('=')
            .ok_or_else(|| format!("--egress {arg}: expected ADDRESS:PORT=SOCKET"))?;
        let listen = listen
            .parse()
            .map_err(|err| format!("--egress {arg}: {err}"))?;
        Ok(EgressRelay {
            listen,
            socket: PathBuf::from(socket),
        })
    }

    /// Binds the listener and relays on a thread of its own.
    pub fn start(self) -> Result<(), String> {
        let listener = TcpListener::bind(self.listen)
            .map_err(|err| format!("cannot listen on {} for egress: {err}", self.listen))?;
        let running = Arc::new(AtomicUsize::new(0));
        thread::Builder::new()
            .name("egress".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(tcp) = conn else { continue };
                    if running.fetch_add(1, Ordering::SeqCst) >= MAX_RELAYS {
                        running.fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                    let (socket, running) = (self.socket.clone(), Arc::clone(&running));
                    let spawned = thread::Builder::new().name("egress-relay".into()).spawn({
                        let running = Arc::clone(&running);
                        move || {
                            relay(tcp, &socket);
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

/// Both directions until each side has closed its half (a refused upstream: closed).
fn relay(tcp: TcpStream, socket: &Path) {
    let Ok(unix) = UnixStream::connect(socket) else {
        return;
    };
    let _ = tcp.set_nodelay(true);
    let (Ok(mut tcp_in), Ok(mut unix_out)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = thread::Builder::new()
        .name("egress-up".into())
        .spawn(move || {
            let _ = io::copy(&mut tcp_in, &mut unix_out);
            let _ = unix_out.shutdown(Shutdown::Write);
        });
    let (mut unix_in, mut tcp_out) = (unix, tcp);
    let _ = io::copy(&mut unix_in, &mut tcp_out);
    let _ = tcp_out.shutdown(Shutdown::Write);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn arguments_parse_and_bad_ones_say_why() {
        let relay = EgressRelay::parse("127.0.0.1:3128=/.kiln/run/egress.sock").unwrap();
        assert_eq!(relay.listen, "127.0.0.1:3128".parse().unwrap());
        assert_eq!(relay.socket, PathBuf::from("/.kiln/run/egress.sock"));
        assert!(EgressRelay::parse("127.0.0.1:3128").is_err());
        assert!(EgressRelay::parse("nowhere=/x").is_err());
    }

    #[test]
    fn bytes_go_both_ways_and_ends_pass() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("egress.sock");
        let server = UnixListener::bind(&socket).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        EgressRelay {
            listen,
            socket: socket.clone(),
        }
        .start()
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
}
