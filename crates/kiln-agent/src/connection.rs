//! One connection: handshake, one request, its answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_protocol::{
    check_versions, read_frame, write_frame, AgentError, ErrorCode, FrameError, Request, Response,
    PROTOCOL_VERSION,
};
use nix::sys::signal::Signal;

use crate::agent::{Agent, MAX_CONNECTIONS};
use crate::atomic_write::write_atomically;
use crate::exec_run::serve_exec;
use crate::file_ops;
use crate::port_pipe::serve_connect_port;
use crate::str_replace::{edit_lines, str_replace};
use crate::stream::{secrets_match, Stream};

/// A client has this long to send each of its two frames.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one connection to the end; errors only concern this connection.
pub fn serve_connection(agent: &Agent, mut stream: Stream) {
    let active = agent.connections.fetch_add(1, Ordering::SeqCst) + 1;
    if active > MAX_CONNECTIONS {
        let _ = send_error(
            &mut stream,
            ErrorCode::Busy,
            format!("the agent is serving {MAX_CONNECTIONS} connections already"),
        );
    } else if let Err(err) = serve(agent, &mut stream) {
        eprintln!("kiln-agent: connection ended with an error: {err}");
    }
    agent.connections.fetch_sub(1, Ordering::SeqCst);
}

fn serve(agent: &Agent, stream: &mut Stream) -> Result<(), FrameError> {
    stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT))?;
    let Some(first) = read_request(stream)? else {
        return Ok(());
    };
    let Request::Hello {
        protocol_version,
        secret,
    } = first
    else {
        return send_error(
            stream,
            ErrorCode::InvalidRequest,
            format!("expected hello, got {}", first.name()),
        );
    };
    if stream.needs_secret() {
        // Anyone on the network can connect: nothing is answered (not even our version)
        // before the secret is checked.
        let expected = agent.secret.as_deref().unwrap_or_default();
        let given = secret.as_deref().unwrap_or_default();
        if expected.is_empty() || !secrets_match(expected, given) {
            return send_error(
                stream,
                ErrorCode::PermissionDenied,
                "the hello lacks this agent's secret",
            );
        }
    }
    write_frame(
        stream,
        &Response::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        },
    )?;
    if let Err(mismatch) = check_versions(protocol_version, PROTOCOL_VERSION) {
        return send_error(stream, ErrorCode::VersionMismatch, mismatch.to_string());
    }
    let Some(request) = read_request(stream)? else {
        return Ok(());
    };
    stream.set_read_timeout(None)?;
    let answer = match request {
        Request::Exec(exec) => return serve_exec(agent, exec, stream),
        Request::ConnectPort { port } => return serve_connect_port(port, stream),
        Request::Hello { .. } => Err(AgentError::new(
            ErrorCode::InvalidRequest,
            "expected a request, got a second hello",
        )),
        Request::ReadFile(read) => {
            file_ops::read_file(&read.path, read.offset, read.max_bytes).map(Response::File)
        }
        Request::WriteFile(write) => write_atomically(
            &write.path,
            write.content.as_bytes(),
            write.mode,
            write.create_parents,
        )
        .map(|()| Response::Written {
            size: write.content.len() as u64,
        }),
        Request::StrReplace(edit) => {
            str_replace(&edit.path, &edit.old, &edit.new).map(Response::Replaced)
        }
        Request::EditLines(edit) => edit_lines(&edit).map(Response::Replaced),
        Request::ListDir { path } => file_ops::list_dir(&path).map(Response::Dir),
        Request::Stat { path } => file_ops::stat(&path).map(Response::Metadata),
        Request::Ping => Ok(Response::Pong {
            uptime_ms: u64::try_from(agent.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        Request::Kill { exec_id, signal } => kill(agent, exec_id, signal),
    };
    let response = answer.unwrap_or_else(Response::Error);
    write_frame(stream, &response)
}

/// Reads a request; frame problems are answered in-band (so the client learns why)
/// and end the connection.
fn read_request(stream: &mut Stream) -> Result<Option<Request>, FrameError> {
    match read_frame::<_, Request>(stream) {
        Ok(request) => Ok(request),
        Err(err @ FrameError::TooLarge { .. }) => {
            send_error(stream, ErrorCode::TooLarge, err.to_string())?;
            Ok(None)
        }
        Err(err @ FrameError::Json(_)) => {
            send_error(stream, ErrorCode::InvalidRequest, err.to_string())?;
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

fn kill(agent: &Agent, exec_id: u64, signal: Option<i32>) -> Result<Response, AgentError> {
    let signal = match signal {
        None => Signal::SIGKILL,
        Some(number) => Signal::try_from(number).map_err(|_| {
            AgentError::new(
                ErrorCode::InvalidRequest,
                format!("unknown signal {number}"),
            )
        })?,
    };
    if agent.execs.signal(exec_id, signal) {
        Ok(Response::Killed { exec_id })
    } else {
        Err(AgentError::new(
            ErrorCode::UnknownExec,
            format!("no running exec with id {exec_id}"),
        ))
    }
}

fn send_error(
    stream: &mut Stream,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), FrameError> {
    write_frame(stream, &Response::Error(AgentError::new(code, message)))
}
