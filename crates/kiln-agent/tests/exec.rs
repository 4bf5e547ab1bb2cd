//! Exec basics against the real agent: output, exit codes, cwd, env, stdin, streaming, kill.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::AgentProcess;
use kiln_protocol::{ClientError, ErrorCode, ExecEvent, ExecRequest, OutputStream};

#[test]
fn echo_and_exit_codes() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let done = client
        .exec(ExecRequest::shell("echo hello; echo oops >&2"))
        .unwrap();
    assert_eq!(done.exit_code, 0);
    assert_eq!(done.stdout.as_bytes(), b"hello\n");
    assert_eq!(done.stderr.as_bytes(), b"oops\n");
    assert!(!done.timed_out);
    assert_eq!(done.signal, None);
    assert_eq!(done.stdout_truncated_bytes, 0);

    let done = client.exec(ExecRequest::shell("exit 42")).unwrap();
    assert_eq!(done.exit_code, 42);

    let done = client.exec(ExecRequest::shell("kill -9 $$")).unwrap();
    assert_eq!(done.signal, Some(9));
    assert_eq!(done.exit_code, 137);

    let done = client
        .exec(ExecRequest::argv(["printf", "%s-%s", "a b", "c"]))
        .unwrap();
    assert_eq!(done.stdout.as_bytes(), b"a b-c");
}

#[test]
fn cwd_env_and_stdin() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let dir = tempfile::tempdir().unwrap();
    let done = client
        .exec(ExecRequest::shell("pwd").cwd(dir.path().to_str().unwrap()))
        .unwrap();
    assert_eq!(
        done.stdout.to_string_lossy().trim(),
        dir.path().canonicalize().unwrap().to_str().unwrap()
    );
    let default_cwd = if std::path::Path::new("/testbed").is_dir() {
        "/testbed"
    } else {
        "/"
    };
    let done = client.exec(ExecRequest::shell("pwd")).unwrap();
    assert_eq!(done.stdout.to_string_lossy().trim(), default_cwd);

    let done = client
        .exec(
            ExecRequest::argv(["env"])
                .env("FOO", "bar baz")
                .env("TZ", "Europe/Paris"),
        )
        .unwrap();
    let env = done.stdout.to_string_lossy();
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines.contains(&"FOO=bar baz"), "{env}");
    assert!(
        lines.contains(&"TZ=Europe/Paris"),
        "request env overrides defaults: {env}"
    );
    assert!(lines.contains(&"LANG=C.UTF-8"), "{env}");
    assert!(lines.contains(&"HOME=/root"), "{env}");
    assert!(
        lines.iter().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{env}"
    );
    assert!(
        !env.contains("KILN_AGENT_SOCKET"),
        "agent-only variables leak: {env}"
    );

    let done = client
        .exec(ExecRequest::shell("wc -c").stdin("four"))
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy().trim(), "4");
    // Without stdin the command reads /dev/null: EOF at once, no hang.
    let done = client
        .exec(ExecRequest::shell("cat; echo end").timeout_ms(5_000))
        .unwrap();
    assert_eq!(done.stdout.as_bytes(), b"end\n");
    assert!(!done.timed_out);
}

/// An argv's program is looked up on the command's own `PATH`, as `execvp` does: the
/// first executable file wins, a file without `#!` runs under `/bin/sh`, and the
/// command leads a process group of its own.
#[test]
fn argv_programs_are_found_on_the_commands_path() {
    use std::os::unix::fs::PermissionsExt;
    let agent = AgentProcess::start();
    let client = agent.client();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&first, &second] {
        std::fs::create_dir(d).unwrap();
    }
    let write = |path: std::path::PathBuf, text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // Not executable in the first directory: skipped, as execvp skips it.
    write(first.join("kiln-tool"), "echo wrong\n", 0o644);
    write(second.join("kiln-tool"), "echo \"script:$0:$1\"\n", 0o755);
    write(
        second.join("kiln-pgid"),
        "#!/bin/sh\nps -o pgid= -p $$; echo $$\n",
        0o755,
    );
    let path = format!("{}:{}:/usr/bin:/bin", first.display(), second.display());

    let done = client
        .exec(ExecRequest::argv(["kiln-tool", "arg"]).env("PATH", &path))
        .unwrap();
    assert_eq!(done.exit_code, 0, "{done:?}");
    assert_eq!(
        done.stdout.to_string_lossy().trim(),
        format!("script:{}:arg", second.join("kiln-tool").display())
    );

    let done = client
        .exec(ExecRequest::argv(["kiln-pgid"]).env("PATH", &path))
        .unwrap();
    let out = done.stdout.to_string_lossy();
    let numbers: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(numbers.len(), 2, "{out}");
    assert_eq!(numbers[0], numbers[1], "the command leads its group: {out}");

    let err = client
        .exec(ExecRequest::argv(["kiln-no-such-tool"]).env("PATH", &path))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::NotFound,
        "{err}"
    );
}

#[test]
fn commands_start_with_no_blocked_signals_and_default_sigpipe() {
    let agent = AgentProcess::start();
    let done = agent
        .client()
        .exec(ExecRequest::argv(["cat", "/proc/self/status"]))
        .unwrap();
    let status = done.stdout.to_string_lossy();
    assert!(status.contains("SigBlk:\t0000000000000000"), "{status}");
    // SIGPIPE (bit 12) must be back to default: std ignores it in the agent.
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .map(|hex| u64::from_str_radix(hex, 16).unwrap())
        .unwrap();
    assert_eq!(ignored & (1 << 12), 0, "{status}");
}

#[test]
fn request_errors_are_typed() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let err = client
        .exec(ExecRequest::shell("true").cwd("/no/such/dir"))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::NotFound,
        "{err}"
    );
    let err = client
        .exec(ExecRequest::argv(["/no/such/program"]))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::NotFound,
        "{err}"
    );
    let err = client
        .exec(ExecRequest::shell("true").max_output_bytes(1 << 30))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::TooLarge,
        "{err}"
    );
    let err = client
        .exec(ExecRequest::argv(Vec::<String>::new()))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::InvalidRequest,
        "{err}"
    );
}

#[test]
fn streaming_delivers_chunks_in_order_and_the_result() {
    let agent = AgentProcess::start();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut started = None;
    let done = agent
        .client()
        .exec_streaming(
            ExecRequest::shell("for i in 1 2 3; do echo $i; sleep 0.05; done; echo err >&2"),
            |event| match event {
                ExecEvent::Started { pid, .. } => started = Some(pid),
                ExecEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                } => stdout.extend_from_slice(data.as_bytes()),
                ExecEvent::Output {
                    stream: OutputStream::Stderr,
                    data,
                } => stderr.extend_from_slice(data.as_bytes()),
            },
        )
        .unwrap();
    assert!(started.is_some());
    assert_eq!(stdout, b"1\n2\n3\n");
    assert_eq!(stderr, b"err\n");
    assert_eq!(done.stdout.as_bytes(), b"1\n2\n3\n");
}

#[test]
fn kill_signals_the_running_exec() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let (tx, rx) = mpsc::channel();
    let runner = {
        let client = client.clone();
        thread::spawn(move || {
            client.exec_streaming(ExecRequest::shell("sleep 1000"), |event| {
                if let ExecEvent::Started { exec_id, .. } = event {
                    tx.send(exec_id).unwrap();
                }
            })
        })
    };
    let exec_id = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    client.kill(exec_id, None).unwrap();
    let done = runner.join().unwrap().unwrap();
    assert_eq!(done.signal, Some(9));
    assert!(!done.timed_out);

    let err = client.kill(exec_id, None).unwrap_err();
    assert!(
        matches!(&err, ClientError::Agent(e) if e.code == ErrorCode::UnknownExec),
        "{err:?}"
    );
}
