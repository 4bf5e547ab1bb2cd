//! `AsyncAgentClient` against a scripted fake agent (run with `--features tokio`).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::thread;

use kiln_protocol::{
    read_frame, write_frame, AsyncAgentClient, Binary, ClientError, ExecDone, ExecEvent,
    ExecRequest, OutputStream, Request, Response, PROTOCOL_VERSION,
};

/// Answers one connection's hello with `version`, then its request with `answers`.
fn fake_agent(version: u32, answers: Vec<Response>) -> (tempfile::TempDir, thread::JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("a.sock")).unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve_one(stream, version, answers);
    });
    (dir, handle)
}

/// The same fake agent on a TCP port of the loopback interface.
fn fake_tcp_agent(answers: Vec<Response>) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve_one(stream, PROTOCOL_VERSION, answers);
    });
    (addr, handle)
}

fn serve_one(mut stream: impl Read + Write, version: u32, answers: Vec<Response>) {
    let _hello: Request = read_frame(&mut stream).unwrap().unwrap();
    let hello = Response::Hello {
        protocol_version: version,
        agent_version: "fake".into(),
    };
    write_frame(&mut stream, &hello).unwrap();
    if let Ok(Some(_request)) = read_frame::<_, Request>(&mut stream) {
        for answer in answers {
            write_frame(&mut stream, &answer).unwrap();
        }
    }
}

fn exec_answers(done: &ExecDone) -> Vec<Response> {
    vec![
        Response::ExecStarted {
            exec_id: 1,
            pid: 10,
        },
        Response::Output {
            stream: OutputStream::Stdout,
            data: Binary::from("hi\n"),
        },
        Response::ExecDone(done.clone()),
    ]
}

#[tokio::test]
async fn async_exec_streams_events_then_returns_the_result() {
    let done = ExecDone {
        exit_code: 3,
        signal: None,
        timed_out: false,
        duration_ms: 5,
        stdout: Binary::from("hi\n"),
        stderr: Binary::default(),
        stdout_truncated_bytes: 0,
        stderr_truncated_bytes: 0,
    };
    let (dir, agent) = fake_agent(PROTOCOL_VERSION, exec_answers(&done));
    let client = AsyncAgentClient::unix(dir.path().join("a.sock"));
    let mut events = Vec::new();
    let got = client
        .exec_streaming(ExecRequest::shell("echo hi"), |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(got, done);
    assert_eq!(
        events,
        vec![
            ExecEvent::Started {
                exec_id: 1,
                pid: 10
            },
            ExecEvent::Output {
                stream: OutputStream::Stdout,
                data: Binary::from("hi\n")
            }
        ]
    );
    agent.join().unwrap();
}

#[tokio::test]
async fn async_version_mismatch_and_unexpected_answers() {
    let (dir, agent) = fake_agent(PROTOCOL_VERSION + 1, vec![]);
    let err = AsyncAgentClient::unix(dir.path().join("a.sock"))
        .ping()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::VersionMismatch(m) if m.agent == PROTOCOL_VERSION + 1),
        "{err:?}"
    );
    agent.join().unwrap();

    let (dir, agent) = fake_agent(PROTOCOL_VERSION, vec![Response::Pong { uptime_ms: 1 }]);
    let err = AsyncAgentClient::unix(dir.path().join("a.sock"))
        .list_dir("/")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Unexpected {
                expected: "dir",
                got: "pong"
            }
        ),
        "{err:?}"
    );
    agent.join().unwrap();
}

#[tokio::test]
async fn the_same_client_speaks_over_tcp() {
    let done = ExecDone {
        exit_code: 0,
        signal: None,
        timed_out: false,
        duration_ms: 1,
        stdout: Binary::from("hi\n"),
        stderr: Binary::default(),
        stdout_truncated_bytes: 0,
        stderr_truncated_bytes: 0,
    };
    let (addr, agent) = fake_tcp_agent(exec_answers(&done));
    let client = AsyncAgentClient::tcp(addr, None);
    assert_eq!(client.target(), addr.to_string());
    let mut events = Vec::new();
    let got = client
        .exec_streaming(ExecRequest::shell("echo hi"), |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(got, done);
    assert_eq!(events.len(), 2, "{events:?}");
    agent.join().unwrap();

    // Nobody listening: a connect error naming the address.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = listener.local_addr().unwrap();
    drop(listener);
    let err = AsyncAgentClient::tcp(closed, None)
        .ping()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Connect { target, .. } if *target == closed.to_string()),
        "{err:?}"
    );
}
