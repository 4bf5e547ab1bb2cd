//! `AsyncAgentClient` against a scripted fake agent (run with `--features tokio`).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used)]

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
        let (mut stream, _) = listener.accept().unwrap();
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
    });
    (dir, handle)
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
    let (dir, agent) = fake_agent(
        PROTOCOL_VERSION,
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
        ],
    );
    let client = AsyncAgentClient::new(dir.path().join("a.sock"));
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
    let err = AsyncAgentClient::new(dir.path().join("a.sock"))
        .ping()
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::VersionMismatch(m) if m.agent == PROTOCOL_VERSION + 1),
        "{err:?}"
    );
    agent.join().unwrap();

    let (dir, agent) = fake_agent(PROTOCOL_VERSION, vec![Response::Pong { uptime_ms: 1 }]);
    let err = AsyncAgentClient::new(dir.path().join("a.sock"))
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
