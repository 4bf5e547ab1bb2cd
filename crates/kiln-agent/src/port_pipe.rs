//! `connect_port`: the connection becomes a byte pipe to a TCP port on the sandbox's own
//! loopback interface, so the server can reach a service inside while the sandbox's
//! network namespace stays closed. The request carries a port, never a host: nothing
//! beyond the sandbox's loopback can be reached this way.

use crate::stream::Stream;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use kiln_protocol::{write_frame, AgentError, ErrorCode, FrameError, Response};

/// Loopback answers at once or not at all; this only bounds a listener whose backlog is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Once the server's side has sent its last byte (end of file), how long the service may
/// stay silent before its connection is given up. Without it a service that never closes
/// would hold an agent thread (and one of its connection slots) for ever.
const HALF_CLOSED_IDLE: Duration = Duration::from_secs(60);

/// Serves one `connect_port` to the end of the piped connection.
pub fn serve_connect_port(port: u16, stream: &mut Stream) -> Result<(), FrameError> {
    if port == 0 {
        let error = AgentError::new(ErrorCode::InvalidRequest, "port 0 cannot be connected to");
        return write_frame(stream, &Response::Error(error));
    }
    let tcp = match connect_loopback(port) {
        Ok(tcp) => tcp,
        Err(err) => {
            let code = match err.kind() {
                ErrorKind::ConnectionRefused | ErrorKind::TimedOut => ErrorCode::ConnectionRefused,
                _ => ErrorCode::Io,
            };
            let message =
                format!("nothing accepts connections on port {port} inside the sandbox: {err}");
            return write_frame(stream, &Response::Error(AgentError::new(code, message)));
        }
    };
    write_frame(stream, &Response::PortConnected { port })?;
    pipe(stream, tcp).map_err(FrameError::Io)
}

/// IPv4 loopback first; a service bound to `::1` only is reached too.
fn connect_loopback(port: u16) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(tcp) => Ok(tcp),
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| err)
        }
        Err(err) => Err(err),
    }
}

/// Copies both ways until both directions have ended. An end of file in one direction is
/// passed on as a half close (`shutdown(Write)`), so request/response protocols that
/// close their sending side still get their answer.
fn pipe(client: &mut Stream, tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut client_reader = client.try_clone()?;
    let mut tcp_writer = tcp.try_clone()?;
    let watch = tcp.try_clone()?;
    let upstream = thread::Builder::new()
        .name("port-upstream".into())
        .spawn(move || {
            let copied = io::copy(&mut client_reader, &mut tcp_writer);
            let _ = tcp_writer.shutdown(Shutdown::Write);
            // The client is done sending: the service has a bounded time to finish.
            let _ = watch.set_read_timeout(Some(HALF_CLOSED_IDLE));
            copied
        })?;
    let mut tcp_reader = tcp;
    let downstream = io::copy(&mut tcp_reader, client);
    let _ = client.shutdown(Shutdown::Write);
    // Whatever ended this direction, the other has no one left to talk to.
    let _ = tcp_reader.shutdown(Shutdown::Both);
    let _ = client.shutdown(Shutdown::Read);
    let upstream = upstream
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the upstream copy panicked")));
    match (downstream, upstream) {
        (Err(err), _) | (_, Err(err)) if !is_disconnect(&err) => Err(err),
        _ => Ok(()),
    }
}

/// How a peer going away shows up; not worth a log line.
fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    )
}
