//! The agent's side of the protocol rules, driven with raw frames.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use common::AgentProcess;
use kiln_protocol::{
    read_frame, write_frame, AgentConnection, ClientError, ErrorCode, Request, Response,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

fn expect_error(stream: &mut UnixStream) -> kiln_protocol::AgentError {
    match read_frame::<_, Response>(stream).unwrap() {
        Some(Response::Error(err)) => err,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn version_mismatch_is_answered_with_both_versions() {
    let agent = AgentProcess::start();
    let mut stream = UnixStream::connect(&agent.socket).unwrap();
    write_frame(
        &mut stream,
        &Request::Hello {
            protocol_version: 99,
            secret: None,
        },
    )
    .unwrap();
    match read_frame::<_, Response>(&mut stream).unwrap() {
        Some(Response::Hello {
            protocol_version,
            agent_version,
        }) => {
            assert_eq!(protocol_version, PROTOCOL_VERSION);
            assert_eq!(agent_version, env!("CARGO_PKG_VERSION"));
        }
        other => panic!("expected hello, got {other:?}"),
    }
    let err = expect_error(&mut stream);
    assert_eq!(err.code, ErrorCode::VersionMismatch);
    assert!(
        err.message.contains("client speaks version 99"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains(&format!("agent speaks version {PROTOCOL_VERSION}")),
        "{}",
        err.message
    );
    assert!(
        read_frame::<_, Response>(&mut stream).unwrap().is_none(),
        "then closes"
    );

    // The client library reports the same from its side.
    let stream = UnixStream::connect(&agent.socket).unwrap();
    let err = AgentConnection::handshake_as(stream, 99, None).unwrap_err();
    assert!(
        matches!(err, ClientError::VersionMismatch(m) if m.client == 99 && m.agent == PROTOCOL_VERSION),
        "{err:?}"
    );
}

#[test]
fn oversize_frame_is_refused_with_a_clear_error() {
    let agent = AgentProcess::start();
    let mut stream = UnixStream::connect(&agent.socket).unwrap();
    let announced = MAX_FRAME_BYTES as u32 + 1;
    stream.write_all(&announced.to_be_bytes()).unwrap();
    let err = expect_error(&mut stream);
    assert_eq!(err.code, ErrorCode::TooLarge);
    assert!(
        err.message.contains(&announced.to_string()),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&MAX_FRAME_BYTES.to_string()),
        "{}",
        err.message
    );
    // The agent is still fine for others.
    agent.client().ping().unwrap();
}

#[test]
fn request_before_hello_and_malformed_json_are_invalid() {
    let agent = AgentProcess::start();
    let mut stream = UnixStream::connect(&agent.socket).unwrap();
    write_frame(&mut stream, &Request::Ping).unwrap();
    let err = expect_error(&mut stream);
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert_eq!(err.message, "expected hello, got ping");

    let mut stream = UnixStream::connect(&agent.socket).unwrap();
    write_frame(
        &mut stream,
        &Request::Hello {
            protocol_version: PROTOCOL_VERSION,
            secret: None,
        },
    )
    .unwrap();
    let _hello: Response = read_frame(&mut stream).unwrap().unwrap();
    write_frame(
        &mut stream,
        &serde_json_value(r#"{"type":"list_dir","path":"/","depth":3}"#),
    )
    .unwrap();
    let err = expect_error(&mut stream);
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(err.message.contains("depth"), "{}", err.message);
}

fn serde_json_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}
