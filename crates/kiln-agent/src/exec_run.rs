//! Serving one exec request: validate, spawn, feed stdin, hand the command to the
//! [`Supervisor`], answer with its result (and output frames when streaming).

use crate::stream::Stream;
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use kiln_protocol::{
    write_frame, AgentError, Binary, ErrorCode, ExecDone, ExecRequest, FrameError, OutputStream,
    Response, MAX_EXEC_TIMEOUT_MS, MAX_OUTPUT_BYTES,
};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::agent::Agent;
use crate::exec_spawn::build_launch;
use crate::exec_supervise::{Outcome, Pipe, Supervisor};
use crate::leftovers::kill_leftovers;

/// A client that stops reading a stream for this long is treated as gone, so the
/// timeout keeps being enforced.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves an exec request on `client`. Errors are about the client connection only:
/// once spawned, the command is supervised to the end whatever the client does.
pub fn serve_exec(
    agent: &Agent,
    request: ExecRequest,
    client: &mut Stream,
) -> Result<(), FrameError> {
    if let Err(err) = validate(&request) {
        return write_frame(client, &Response::Error(err));
    }
    let launch = match build_launch(&request, &agent.base_env) {
        Ok(launch) => launch,
        Err(err) => return write_frame(client, &Response::Error(err)),
    };
    let spawn_gate = agent
        .spawn_gate
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (child, exit) = match agent.reaper.spawn(&launch, request.stdin.is_some()) {
        Ok(spawned) => spawned,
        Err(err) => return write_frame(client, &Response::Error(spawn_error(&err, &request))),
    };
    let started = Instant::now();
    let pgid = Pid::from_raw(child.pid);
    let pid = child.pid.unsigned_abs();
    let registration = agent.execs.register(pgid);
    drop(spawn_gate);

    let mut client_alive = client.set_write_timeout(Some(STREAM_WRITE_TIMEOUT)).is_ok()
        && write_frame(
            client,
            &Response::ExecStarted {
                exec_id: registration.id(),
                pid,
            },
        )
        .is_ok();

    if let (Some(mut stdin), Some(data)) = (child.stdin, request.stdin) {
        // A thread, so a command that never reads its stdin cannot block us; errors
        // (EPIPE when it exits early) are the command's business.
        let _ = thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(data.as_bytes());
            });
    }
    let budget = usize::try_from(request.max_output_bytes).unwrap_or(usize::MAX);
    let pipes = vec![
        Pipe::new(Some(child.stdout), OutputStream::Stdout, budget),
        Pipe::new(Some(child.stderr), OutputStream::Stderr, budget),
    ];

    let deadline = started + Duration::from_millis(request.timeout_ms);
    let outcome = Supervisor::new(pgid, pipes, exit, deadline).run(|stream, data| {
        if request.stream && client_alive {
            let frame = Response::Output {
                stream,
                data: Binary::from(data),
            };
            client_alive = write_frame(client, &frame).is_ok();
        }
    });
    registration.mark_finished();
    // Before answering, so the next command starts in a sandbox this one cannot clog.
    kill_leftovers(agent);

    let done = exec_done(outcome, started);
    let result = write_frame(client, &Response::ExecDone(done));
    // Unlisted only once answered, so shutdown's wait means "every client got its result".
    drop(registration);
    result
}

fn exec_done(outcome: Outcome, started: Instant) -> ExecDone {
    let (exit_code, signal) = match outcome.status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (-1, None),
    };
    let mut outputs = outcome.outputs.into_iter();
    let (stdout, stdout_truncated_bytes) = outputs.next().unwrap_or_default();
    let (stderr, stderr_truncated_bytes) = outputs.next().unwrap_or_default();
    ExecDone {
        exit_code: if outcome.timed_out { 124 } else { exit_code },
        signal,
        timed_out: outcome.timed_out,
        duration_ms: u64::try_from(outcome.exited.duration_since(started).as_millis())
            .unwrap_or(u64::MAX),
        stdout: Binary(stdout),
        stderr: Binary(stderr),
        stdout_truncated_bytes,
        stderr_truncated_bytes,
    }
}

fn validate(request: &ExecRequest) -> Result<(), AgentError> {
    if request.timeout_ms == 0 {
        return Err(AgentError::new(
            ErrorCode::InvalidRequest,
            "timeout_ms must be positive",
        ));
    }
    if request.timeout_ms > MAX_EXEC_TIMEOUT_MS {
        return Err(AgentError::new(
            ErrorCode::TooLarge,
            format!(
                "timeout_ms {} exceeds the limit of {MAX_EXEC_TIMEOUT_MS}",
                request.timeout_ms
            ),
        ));
    }
    if request.max_output_bytes > MAX_OUTPUT_BYTES {
        return Err(AgentError::new(
            ErrorCode::TooLarge,
            format!(
                "max_output_bytes {} exceeds the limit of {MAX_OUTPUT_BYTES}",
                request.max_output_bytes
            ),
        ));
    }
    Ok(())
}

fn spawn_error(err: &std::io::Error, request: &ExecRequest) -> AgentError {
    let what = match &request.command {
        kiln_protocol::Command::Argv(argv) => argv.first().cloned().unwrap_or_default(),
        kiln_protocol::Command::Shell(_) => "the shell".to_string(),
    };
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        _ => ErrorCode::Io,
    };
    AgentError::new(code, format!("cannot start {what}: {err}"))
}
