//! The agent on TCP (`--listen-tcp`, an agent in a container or a Pod): only a hello
//! carrying its secret is answered, and commands never see the secret.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::agent_binary;
use kiln_protocol::{
    read_frame, write_frame, ErrorCode, ExecRequest, Request, Response, PROTOCOL_VERSION,
};

const SECRET: &str = "s3cret-of-thirty-two-characters!";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(secret: Option<&str>, addr: SocketAddr) -> Child {
    let mut command = Command::new(agent_binary());
    command
        .env_clear()
        .args(["--listen-tcp", &addr.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(secret) = secret {
        command.env("KILN_AGENT_SECRET", secret);
    }
    command.spawn().unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(err) => panic!("agent did not listen on {addr}: {err}"),
        }
    }
}

fn hello(addr: SocketAddr, secret: Option<&str>) -> (TcpStream, Option<Response>) {
    let mut stream = connect(addr);
    let hello = Request::Hello {
        protocol_version: PROTOCOL_VERSION,
        secret: secret.map(str::to_owned),
    };
    write_frame(&mut stream, &hello).unwrap();
    let answer = read_frame::<_, Response>(&mut stream).unwrap();
    (stream, answer)
}

#[test]
fn only_a_hello_with_the_secret_is_answered() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _agent = Agent(start(Some(SECRET), addr));
    for wrong in [
        None,
        Some(""),
        Some("s3cret-of-thirty-two-characters?"),
        Some("s3cret"),
    ] {
        let (_, answer) = hello(addr, wrong);
        match answer {
            Some(Response::Error(err)) => assert_eq!(err.code, ErrorCode::PermissionDenied),
            other => panic!("{wrong:?} was answered: {other:?}"),
        }
    }
    let (mut stream, answer) = hello(addr, Some(SECRET));
    assert!(matches!(answer, Some(Response::Hello { .. })), "{answer:?}");
    let exec = ExecRequest::shell("echo \"[$KILN_AGENT_SECRET]\"");
    write_frame(&mut stream, &Request::Exec(exec)).unwrap();
    loop {
        match read_frame::<_, Response>(&mut stream).unwrap() {
            Some(Response::ExecStarted { .. }) => {}
            Some(Response::ExecDone(done)) => {
                assert_eq!(
                    done.stdout.as_bytes(),
                    b"[]\n",
                    "the secret leaked to commands"
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tcp_without_a_strong_secret_does_not_start() {
    for secret in [None, Some("short")] {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let out = start(secret, addr).wait_with_output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("KILN_AGENT_SECRET"), "{stderr}");
    }
}
