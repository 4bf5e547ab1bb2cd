//! Supervising one running command: read both pipes into bounded captures, enforce the
//! timeout on the whole process group, collect the exit status.
//!
//! Timeout: SIGTERM to the group, then SIGKILL to the group after the grace period (or
//! as soon as the command has exited and its pipes closed, for whatever is left of its
//! group). Processes that left the group with `setsid` escape this; whatever survives is
//! killed once the command is over (`crate::leftovers`).
//!
//! Background processes that keep the output pipes open after the command exited are
//! read for [`LINGER_AFTER_EXIT`] more, then killed with the other leftovers.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::thread;
use std::time::{Duration, Instant};

use kiln_protocol::{OutputStream, EXEC_KILL_GRACE_MS};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::output_capture::OutputCapture;
use crate::reaper::ExitReceiver;

/// Bytes read from a pipe at a time; also the largest `output` frame payload.
const READ_CHUNK: usize = 64 * 1024;

/// How long pipes are still read after the command exited, for output written by
/// background processes that hold them open.
const LINGER_AFTER_EXIT: Duration = Duration::from_millis(200);

const KILL_GRACE: Duration = Duration::from_millis(EXEC_KILL_GRACE_MS);

/// One output pipe and what was kept of it.
pub struct Pipe {
    reader: Option<File>,
    capture: OutputCapture,
    stream: OutputStream,
}

impl Pipe {
    /// A pipe (absent if the stream was not captured) kept within `budget` bytes.
    pub fn new(reader: Option<File>, stream: OutputStream, budget: usize) -> Self {
        Pipe {
            reader,
            capture: OutputCapture::new(budget),
            stream,
        }
    }
}

/// How a supervised command ended.
pub struct Outcome {
    /// Its wait status (`StillAlive` only if it was never collected).
    pub status: WaitStatus,
    /// When its exit was observed.
    pub exited: Instant,
    /// The timeout fired.
    pub timed_out: bool,
    /// Kept bytes and dropped-byte count, per pipe, in the order given.
    pub outputs: Vec<(Vec<u8>, u64)>,
}

/// Watches one command until it has exited and its output is read.
pub struct Supervisor {
    pgid: Pid,
    pipes: Vec<Pipe>,
    exit: ExitReceiver,
    deadline: Instant,
    term_sent: Option<Instant>,
    kill_sent: bool,
    status: Option<(WaitStatus, Instant)>,
}

impl Supervisor {
    /// Supervises the process group `pgid` until `deadline`.
    pub fn new(pgid: Pid, pipes: Vec<Pipe>, exit: ExitReceiver, deadline: Instant) -> Self {
        Supervisor {
            pgid,
            pipes,
            exit,
            deadline,
            term_sent: None,
            kill_sent: false,
            status: None,
        }
    }

    /// Runs to the end; `on_output` sees every chunk as it is read.
    pub fn run(mut self, mut on_output: impl FnMut(OutputStream, &[u8])) -> Outcome {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            self.enforce_timeout(now);
            let linger_until = self.linger_until();
            let all_eof = self.pipes.iter().all(|p| p.reader.is_none());
            if linger_until.is_some_and(|until| all_eof || now >= until) {
                break;
            }
            let (pipe_ready, exit_ready) = self.wait_ready(self.next_wakeup(now, linger_until));
            for (pipe, ready) in self.pipes.iter_mut().zip(pipe_ready) {
                if ready {
                    read_once(pipe, &mut buf, &mut on_output);
                }
            }
            if exit_ready {
                if let Some(status) = self.exit.try_status() {
                    self.status = Some((status, Instant::now()));
                }
            }
        }
        if self.term_sent.is_some() && !self.kill_sent {
            // Whatever of the group survived SIGTERM after the command itself exited.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        let (status, exited) = self
            .status
            .unwrap_or((WaitStatus::StillAlive, Instant::now()));
        Outcome {
            status,
            exited,
            timed_out: self.term_sent.is_some(),
            outputs: self.pipes.into_iter().map(|p| p.capture.finish()).collect(),
        }
    }

    fn enforce_timeout(&mut self, now: Instant) {
        if self.status.is_none() && self.term_sent.is_none() && now >= self.deadline {
            let _ = killpg(self.pgid, Signal::SIGTERM);
            self.term_sent = Some(now);
        }
        if let Some(sent) = self.term_sent {
            if !self.kill_sent && now >= sent + KILL_GRACE {
                let _ = killpg(self.pgid, Signal::SIGKILL);
                self.kill_sent = true;
            }
        }
    }

    /// Once the command has exited: until when its pipes are still read.
    fn linger_until(&self) -> Option<Instant> {
        self.status.map(|(_, exited)| match self.term_sent {
            Some(sent) => sent + KILL_GRACE,
            None => exited + LINGER_AFTER_EXIT,
        })
    }

    fn next_wakeup(&self, now: Instant, linger_until: Option<Instant>) -> PollTimeout {
        let wake_at = if linger_until.is_some() {
            linger_until
        } else if let Some(sent) = self.term_sent {
            // After SIGKILL only the exit status can come: no timer needed.
            (!self.kill_sent).then_some(sent + KILL_GRACE)
        } else {
            Some(self.deadline)
        };
        match wake_at {
            // +1 ms: poll rounds down, and waking early just spins once more.
            Some(at) => {
                let ms = at.saturating_duration_since(now).as_millis() + 1;
                PollTimeout::try_from(ms.min(i32::MAX as u128)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// Waits for output or the exit status; returns which pipes and whether the exit
    /// notification are ready.
    fn wait_ready(&self, timeout: PollTimeout) -> (Vec<bool>, bool) {
        let mut fds = Vec::with_capacity(self.pipes.len() + 1);
        let mut owners = Vec::with_capacity(self.pipes.len() + 1);
        for (index, pipe) in self.pipes.iter().enumerate() {
            if let Some(reader) = &pipe.reader {
                fds.push(PollFd::new(reader.as_fd(), PollFlags::POLLIN));
                owners.push(Some(index));
            }
        }
        if self.status.is_none() {
            fds.push(PollFd::new(self.exit.wake_fd(), PollFlags::POLLIN));
            owners.push(None);
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            // Not expected with valid fds; avoid a hot loop if it happens anyway.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        let mut pipe_ready = vec![false; self.pipes.len()];
        let mut exit_ready = false;
        for (fd, owner) in fds.iter().zip(owners) {
            let ready = fd.revents().is_some_and(|r| !r.is_empty());
            match owner {
                Some(index) => pipe_ready[index] = ready,
                None => exit_ready = ready,
            }
        }
        (pipe_ready, exit_ready)
    }
}

/// One read (poll said it will not block): EOF or an error closes the pipe.
fn read_once(pipe: &mut Pipe, buf: &mut [u8], on_output: &mut impl FnMut(OutputStream, &[u8])) {
    let Some(reader) = pipe.reader.as_mut() else {
        return;
    };
    match reader.read(buf) {
        Ok(0) => pipe.reader = None,
        Ok(n) => {
            pipe.capture.push(&buf[..n]);
            on_output(pipe.stream, &buf[..n]);
        }
        Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
        Err(_) => pipe.reader = None,
    }
}
