//! Running one exec: spawn, feed stdin, read both pipes into bounded captures (and the
//! client, when streaming), enforce the timeout on the whole process group, report.
//!
//! Timeout: SIGTERM to the group, then SIGKILL to the group after the grace period (or
//! as soon as the command has exited, for whatever is left of its group). Processes
//! that left the group with `setsid` escape this; inside a sandbox the pid namespace's
//! teardown kills them when the session ends.
//!
//! Background processes that outlive a command which did *not* time out are left
//! running (`cmd &` is a legitimate way to start a server). If they keep the output
//! pipes open, reading stops [`LINGER_AFTER_EXIT`] after the command exits.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use kiln_protocol::{
    write_frame, AgentError, Binary, ErrorCode, ExecDone, ExecRequest, FrameError, OutputStream,
    Response, EXEC_KILL_GRACE_MS, MAX_EXEC_TIMEOUT_MS, MAX_OUTPUT_BYTES,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::agent::Agent;
use crate::exec_spawn::build_command;
use crate::output_capture::OutputCapture;

/// Bytes read from a pipe at a time; also the largest `output` frame payload.
const READ_CHUNK: usize = 64 * 1024;

/// How long pipes are still read after the command exited, for output written by
/// background processes that hold them open.
const LINGER_AFTER_EXIT: Duration = Duration::from_millis(200);

/// A client that stops reading a stream for this long is treated as gone, so the
/// timeout keeps being enforced.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const KILL_GRACE: Duration = Duration::from_millis(EXEC_KILL_GRACE_MS);

/// Serves an exec request on `client`. Errors are about the client connection only:
/// once spawned, the command is supervised to the end whatever the client does.
pub fn serve_exec(
    agent: &Agent,
    request: ExecRequest,
    client: &mut UnixStream,
) -> Result<(), FrameError> {
    if let Err(err) = validate(&request) {
        return write_frame(client, &Response::Error(err));
    }
    let mut command = match build_command(&request, &agent.base_env) {
        Ok(command) => command,
        Err(err) => return write_frame(client, &Response::Error(err)),
    };
    command
        .stdin(
            if request.stdin.is_none() && Path::new("/dev/null").exists() {
                Stdio::null()
            } else {
                // Data to feed, or a rootfs without /dev/null: a pipe whose write end is
                // closed once the data (if any) is written reads as EOF all the same.
                Stdio::piped()
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, mut exit) = match agent.reaper.spawn(&mut command) {
        Ok(spawned) => spawned,
        Err(err) => return write_frame(client, &Response::Error(spawn_error(&err, &request))),
    };
    let started = Instant::now();
    let pid = child.id();
    let pgid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    let registration = agent.execs.register(pgid);

    let mut client_alive = client.set_write_timeout(Some(STREAM_WRITE_TIMEOUT)).is_ok()
        && write_frame(
            client,
            &Response::ExecStarted {
                exec_id: registration.id(),
                pid,
            },
        )
        .is_ok();

    let stdin = child.stdin.take();
    if let (Some(mut stdin), Some(data)) = (stdin, request.stdin) {
        // A thread, so a command that never reads its stdin cannot block us; errors
        // (EPIPE when it exits early) are the command's business.
        let _ = thread::Builder::new()
            .name("exec-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(data.as_bytes());
            });
    }
    let budget = usize::try_from(request.max_output_bytes).unwrap_or(usize::MAX);
    let mut pipes: Vec<Pipe> = [
        (child.stdout.take().map(OwnedFd::from), OutputStream::Stdout),
        (child.stderr.take().map(OwnedFd::from), OutputStream::Stderr),
    ]
    .into_iter()
    .map(|(fd, stream)| Pipe {
        reader: fd.map(File::from),
        capture: OutputCapture::new(budget),
        stream,
    })
    .collect();
    drop(child);

    let deadline = started + Duration::from_millis(request.timeout_ms);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut term_sent: Option<Instant> = None;
    let mut kill_sent = false;
    let mut status: Option<(WaitStatus, Instant)> = None;
    loop {
        let now = Instant::now();
        if status.is_none() && term_sent.is_none() && now >= deadline {
            let _ = killpg(pgid, Signal::SIGTERM);
            term_sent = Some(now);
        }
        if let Some(sent) = term_sent {
            if !kill_sent && now >= sent + KILL_GRACE {
                let _ = killpg(pgid, Signal::SIGKILL);
                kill_sent = true;
            }
        }
        let linger_until = status.map(|(_, exited)| match term_sent {
            Some(sent) => sent + KILL_GRACE,
            None => exited + LINGER_AFTER_EXIT,
        });
        let all_eof = pipes.iter().all(|p| p.reader.is_none());
        if let Some(until) = linger_until {
            if all_eof || now >= until {
                break;
            }
        }
        let wake_at = if let Some(until) = linger_until {
            Some(until)
        } else if let Some(sent) = term_sent {
            (!kill_sent).then_some(sent + KILL_GRACE)
        } else {
            Some(deadline)
        };
        let timeout = match wake_at {
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };

        let (pipe_ready, exit_ready) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
            let mut owners: Vec<Option<usize>> = Vec::with_capacity(3);
            for (index, pipe) in pipes.iter().enumerate() {
                if let Some(reader) = &pipe.reader {
                    fds.push(PollFd::new(reader.as_fd(), PollFlags::POLLIN));
                    owners.push(Some(index));
                }
            }
            if status.is_none() {
                fds.push(PollFd::new(exit.wake_fd(), PollFlags::POLLIN));
                owners.push(None);
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
            let mut pipe_ready = [false; 2];
            let mut exit_ready = false;
            for (fd, owner) in fds.iter().zip(owners) {
                let ready = fd.revents().is_some_and(|r| !r.is_empty());
                match owner {
                    Some(index) => pipe_ready[index] = ready,
                    None => exit_ready = ready,
                }
            }
            (pipe_ready, exit_ready)
        };

        for (index, pipe) in pipes.iter_mut().enumerate() {
            if !pipe_ready[index] {
                continue;
            }
            let Some(reader) = pipe.reader.as_mut() else {
                continue;
            };
            match reader.read(&mut buf) {
                Ok(0) => pipe.reader = None,
                Ok(n) => {
                    pipe.capture.push(&buf[..n]);
                    if request.stream && client_alive {
                        let frame = Response::Output {
                            stream: pipe.stream,
                            data: Binary::from(&buf[..n]),
                        };
                        client_alive = write_frame(client, &frame).is_ok();
                    }
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => pipe.reader = None,
            }
        }
        if exit_ready {
            if let Some(got) = exit.try_status() {
                status = Some((got, Instant::now()));
            }
        }
    }
    if term_sent.is_some() && !kill_sent {
        // Whatever of the group survived SIGTERM after the command itself exited.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    registration.mark_finished();

    let (wait_status, exited) = status.unwrap_or((WaitStatus::StillAlive, Instant::now()));
    let (exit_code, signal) = match wait_status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (-1, None),
    };
    let timed_out = term_sent.is_some();
    let mut outputs = pipes.into_iter().map(|p| p.capture.finish());
    let (stdout, stdout_truncated_bytes) = outputs.next().unwrap_or_default();
    let (stderr, stderr_truncated_bytes) = outputs.next().unwrap_or_default();
    let done = ExecDone {
        exit_code: if timed_out { 124 } else { exit_code },
        signal,
        timed_out,
        duration_ms: u64::try_from(exited.duration_since(started).as_millis()).unwrap_or(u64::MAX),
        stdout: Binary(stdout),
        stderr: Binary(stderr),
        stdout_truncated_bytes,
        stderr_truncated_bytes,
    };
    let result = write_frame(client, &Response::ExecDone(done));
    // Unlisted only once answered, so shutdown's wait means "every client got its result".
    drop(registration);
    result
}

struct Pipe {
    reader: Option<File>,
    capture: OutputCapture,
    stream: OutputStream,
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
