//! Runs an external tool (debootstrap, umount), forwarding each output line as it arrives and
//! keeping the last ones for the error message.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::error::{EnvImageError, Result};

/// Lines of output kept for [`EnvImageError::CommandFailed`].
const TAIL_LINES: usize = 40;

/// Runs `command` to completion with stdin closed. Every line of stdout and stderr goes to
/// `on_line` (interleaved as they arrive); a non-zero exit is an error carrying the tail of
/// the output.
pub(crate) fn run_logged(mut command: Command, mut on_line: impl FnMut(&str)) -> Result<()> {
    let shown = format!("{command:?}");
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| EnvImageError::Spawn { program, source })?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for stream in [stdout, stderr].into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            // Lossy: debootstrap may print bytes of a non-UTF-8 locale.
            for line in BufReader::new(stream).split(b'\n').map_while(|l| l.ok()) {
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for line in rx {
        on_line(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(EnvImageError::io("wait for", shown.clone()))?;
    if status.success() {
        return Ok(());
    }
    Err(EnvImageError::CommandFailed {
        command: shown,
        status: status.to_string(),
        output: Vec::from(tail).join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_both_streams_and_reports_the_tail_on_failure() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let mut lines = Vec::new();
        let err = run_logged(cmd, |l| lines.push(l.to_owned())).unwrap_err();
        lines.sort();
        assert_eq!(lines, ["err", "out"]);
        match err {
            EnvImageError::CommandFailed { status, output, .. } => {
                assert!(status.contains('3'), "{status}");
                assert!(output.contains("err") && output.contains("out"), "{output}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_programs_are_spawn_errors() {
        let err = run_logged(Command::new("/nonexistent/tool"), |_| {}).unwrap_err();
        assert!(matches!(err, EnvImageError::Spawn { .. }), "{err:?}");
    }
}
