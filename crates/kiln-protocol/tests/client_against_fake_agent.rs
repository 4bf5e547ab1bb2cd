//! The clients against a scripted fake agent: version checks and exchange errors.
#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixListener;
use std::thread;

use kiln_protocol::{
    read_frame, write_frame, AgentClient, Binary, ClientError, ExecEvent, ExecRequest,
    OutputStream, Request, Response, PROTOCOL_VERSION,
};

/// Serves one connection: reads the hello, sends `script`, then reads (and returns)
/// the request that followed, if any.
fn fake_agent(script: Vec<Response>) -> (tempfile::TempDir, thread::JoinHandle<Vec<Request>>) {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("agent.sock")).unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let hello: Request = read_frame(&mut stream).unwrap().unwrap();
        seen.push(hello);
        let mut script = script.into_iter();
        if let Some(first) = script.next() {
            write_frame(&mut stream, &first).unwrap();
        }
        if let Ok(Some(req)) = read_frame::<_, Request>(&mut stream) {
            seen.push(req);
        }
        for resp in script {
            let _ = write_frame(&mut stream, &resp);
        }
        seen
    });
    (dir, handle)
}

fn agent_hello(version: u32) -> Response {
    Response::Hello {
        protocol_version: version,
        agent_version: "fake".into(),
    }
}

#[test]
fn version_mismatch_names_both_versions() {
    let (dir, agent) = fake_agent(vec![agent_hello(PROTOCOL_VERSION + 98)]);
    let client = AgentClient::new(dir.path().join("agent.sock"));
    let err = client.ping().unwrap_err();
    let ClientError::VersionMismatch(mismatch) = &err else {
        panic!("expected a version mismatch, got {err:?}");
    };
    assert_eq!(mismatch.client, PROTOCOL_VERSION);
    assert_eq!(mismatch.agent, PROTOCOL_VERSION + 98);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("client speaks version {PROTOCOL_VERSION}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("agent speaks version {}", PROTOCOL_VERSION + 98)),
        "{msg}"
    );
    let seen = agent.join().unwrap();
    assert_eq!(
        seen[0],
        Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            secret: None,
        }
    );
}

#[test]
fn wrong_answer_names_what_was_expected() {
    let (dir, agent) = fake_agent(vec![
        agent_hello(PROTOCOL_VERSION),
        Response::Written { size: 1 },
    ]);
    let err = AgentClient::new(dir.path().join("agent.sock"))
        .ping()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Unexpected {
                expected: "pong",
                got: "written"
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "unexpected message from the agent: expected pong, got written"
    );
    assert_eq!(agent.join().unwrap()[1], Request::Ping);
}

#[test]
fn exec_output_before_start_is_unexpected_and_close_is_reported() {
    let (dir, agent) = fake_agent(vec![
        agent_hello(PROTOCOL_VERSION),
        Response::Output {
            stream: OutputStream::Stdout,
            data: Binary::from("x"),
        },
    ]);
    let client = AgentClient::new(dir.path().join("agent.sock"));
    let err = client.exec(ExecRequest::shell("true")).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Unexpected {
                expected: "exec_started",
                got: "output"
            }
        ),
        "{err:?}"
    );
    agent.join().unwrap();

    let (dir, agent) = fake_agent(vec![
        agent_hello(PROTOCOL_VERSION),
        Response::ExecStarted {
            exec_id: 7,
            pid: 42,
        },
    ]);
    let mut events = Vec::new();
    let err = AgentClient::new(dir.path().join("agent.sock"))
        .exec_streaming(ExecRequest::shell("true"), |e| events.push(e))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                expected: "output or exec_done"
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        events,
        vec![ExecEvent::Started {
            exec_id: 7,
            pid: 42
        }]
    );
    let seen = agent.join().unwrap();
    let Request::Exec(exec) = &seen[1] else {
        panic!("expected exec, got {:?}", seen[1]);
    };
    assert!(exec.stream, "exec_streaming must ask the agent to stream");
}

#[test]
fn missing_agent_is_a_connect_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let err = AgentClient::new(&path).ping().unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}
