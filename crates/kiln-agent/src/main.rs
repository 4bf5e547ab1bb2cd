//! `kiln-agent`: PID 1 of every Kiln sandbox. Listens on a unix socket and serves the
//! `kiln-protocol` requests: exec, files, str_replace. Also reaps zombies (as PID 1, or
//! as a child subreaper when started as an ordinary process, e.g. in tests).

mod agent;
mod atomic_write;
mod connection;
mod exec_run;
mod exec_spawn;
mod exec_supervise;
mod exec_table;
mod file_ops;
mod leftovers;
mod output_capture;
mod port_pipe;
mod process_tree;
mod reaper;
mod signals;
mod str_replace;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Instant;

use agent::Agent;

const USAGE: &str = "usage: kiln-agent --listen <socket path>   (or env KILN_AGENT_SOCKET)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kiln-agent: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let started = Instant::now();
    let socket_path = socket_path_from_args()?;
    // Order matters: signals are blocked before any thread exists so every thread
    // inherits the mask and only the signal thread ever receives them.
    signals::block_handled_signals().map_err(|err| format!("cannot block signals: {err}"))?;
    // The sandbox's processes share the agent's uid: dumpable, the agent would be theirs
    // to inspect and rewrite (`/proc/1/mem`, `pidfd_getfd` of its listening socket, so
    // answering the host in its place). Not dumpable, that takes CAP_SYS_PTRACE.
    // Commands are dumpable again from their exec.
    nix::sys::prctl::set_dumpable(false)
        .map_err(|err| format!("cannot make the agent non-dumpable: {err}"))?;
    let is_pid1 = std::process::id() == 1;
    if !is_pid1 {
        // Orphans of our commands come to us, as they would to PID 1, so the same
        // reaping path runs in tests as in a sandbox.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|err| format!("cannot become a child subreaper: {err}"))?;
    }
    let listener = bind(&socket_path)?;
    let agent = Arc::new(Agent {
        reaper: reaper::ChildReaper::default(),
        execs: Arc::default(),
        base_env: exec_spawn::base_env(std::env::vars_os()),
        started,
        socket_path: socket_path.clone(),
        is_pid1,
        connections: AtomicUsize::new(0),
        spawn_gate: RwLock::default(),
    });
    {
        let agent = Arc::clone(&agent);
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || signals::run_signal_loop(agent))
            .map_err(|err| format!("cannot start the signal thread: {err}"))?;
    }
    eprintln!(
        "kiln-agent {}: listening on {} (pid {}{})",
        env!("CARGO_PKG_VERSION"),
        socket_path.display(),
        std::process::id(),
        if is_pid1 { ", init" } else { ", subreaper" }
    );
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(err) => {
                eprintln!("kiln-agent: accept failed: {err}");
                continue;
            }
        };
        let agent = Arc::clone(&agent);
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || connection::serve_connection(&agent, stream));
        if let Err(err) = spawned {
            eprintln!("kiln-agent: cannot start a connection thread: {err}");
        }
    }
    Ok(())
}

fn socket_path_from_args() -> Result<PathBuf, String> {
    let mut args = std::env::args_os().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--listen") => {
                path = Some(PathBuf::from(args.next().ok_or("--listen needs a path")?));
            }
            Some("--help" | "-h") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some("--version" | "-V") => {
                println!("kiln-agent {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    path.or_else(|| std::env::var_os("KILN_AGENT_SOCKET").map(PathBuf::from))
        .ok_or_else(|| format!("no socket path given\n{USAGE}"))
}

/// Binds the socket, replacing a stale socket file (never any other kind of file), and
/// makes it accessible to its owner only.
fn bind(path: &PathBuf) -> Result<UnixListener, String> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = fs::remove_file(path);
        } else {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
    }
    let listener = UnixListener::bind(path)
        .map_err(|err| format!("cannot listen on {}: {err}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|err| format!("cannot restrict {}: {err}", path.display()))?;
    Ok(listener)
}
