//! `kiln-agent`: PID 1 of every Kiln sandbox. Listens on a unix socket (and/or on TCP,
//! with a per-sandbox secret, in a container or a Pod) and serves the
//! `kiln-protocol` requests: exec, files, str_replace. Also reaps zombies (as PID 1, or
//! as a child subreaper when started as an ordinary process, e.g. in tests).

mod agent;
mod atomic_write;
mod connection;
mod egress_relay;
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
mod spawn;
mod str_replace;
mod stream;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Instant;

use agent::Agent;
use stream::Stream;

const USAGE: &str = "usage: kiln-agent [--listen <socket path>] [--listen-tcp <address:port>] \
     [--egress <address:port>=<socket path>|tcp:<host:port>] [--sandbox-id <id>]\n  \
     (or env KILN_AGENT_SOCKET; TCP needs env KILN_AGENT_SECRET, which every hello must carry)";

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
    let listen = listen_from_args()?;
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
    let unix = listen.socket.as_ref().map(bind).transpose()?;
    let tcp = match &listen.tcp {
        Some(addr) => {
            Some(TcpListener::bind(addr).map_err(|err| format!("cannot listen on {addr}: {err}"))?)
        }
        None => None,
    };
    // The secret also proves who the sandbox is to a TCP egress listener (never to
    // commands: `exec_spawn` keeps it out of their env).
    let credentials = listen
        .sandbox_id
        .clone()
        .zip(listen.secret.clone())
        .map(|(id, secret)| egress_relay::Credentials { id, secret });
    let agent = Arc::new(Agent {
        reaper: reaper::ChildReaper::default(),
        execs: Arc::default(),
        base_env: exec_spawn::base_env(std::env::vars_os()),
        started,
        socket_path: listen.socket.clone(),
        secret: listen.secret,
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
    if let Some(relay) = listen.egress.clone() {
        relay.start(credentials)?;
    }
    let mut places = Vec::new();
    if let Some(path) = &listen.socket {
        places.push(path.display().to_string());
    }
    if let Some(tcp) = &tcp {
        let addr = tcp
            .local_addr()
            .map_err(|err| format!("no local address: {err}"))?;
        places.push(format!("tcp {addr}"));
    }
    eprintln!(
        "kiln-agent {}: listening on {} (pid {}{})",
        env!("CARGO_PKG_VERSION"),
        places.join(" and "),
        std::process::id(),
        if is_pid1 { ", init" } else { ", subreaper" }
    );
    match (unix, tcp) {
        (Some(unix), Some(tcp)) => {
            let on_tcp = Arc::clone(&agent);
            thread::Builder::new()
                .name("accept-tcp".into())
                .spawn(move || accept_tcp(&on_tcp, &tcp))
                .map_err(|err| format!("cannot start the TCP accept thread: {err}"))?;
            accept_unix(&agent, &unix);
        }
        (Some(unix), None) => accept_unix(&agent, &unix),
        (None, Some(tcp)) => accept_tcp(&agent, &tcp),
        (None, None) => unreachable!("listen_from_args asks for at least one"),
    }
    Ok(())
}

fn accept_unix(agent: &Arc<Agent>, listener: &UnixListener) {
    for stream in listener.incoming() {
        serve_accepted(agent, stream.map(Stream::Unix));
    }
}

fn accept_tcp(agent: &Arc<Agent>, listener: &TcpListener) {
    for stream in listener.incoming() {
        serve_accepted(
            agent,
            stream.map(|s| {
                // Requests are single small frames answered at once: no Nagle delay.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        );
    }
}

fn serve_accepted(agent: &Arc<Agent>, stream: std::io::Result<Stream>) {
    let stream = match stream {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!("kiln-agent: accept failed: {err}");
            return;
        }
    };
    let agent = Arc::clone(agent);
    let spawned = thread::Builder::new()
        .name("connection".into())
        .spawn(move || connection::serve_connection(&agent, stream));
    if let Err(err) = spawned {
        eprintln!("kiln-agent: cannot start a connection thread: {err}");
    }
}

/// Where the agent listens, and the secret TCP clients must send.
struct Listen {
    socket: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    secret: Option<String>,
    /// `--egress`: relay a TCP address inside to the server's egress socket or listener.
    egress: Option<egress_relay::EgressRelay>,
    /// `--sandbox-id`: who this sandbox is to a TCP egress listener.
    sandbox_id: Option<String>,
}

/// Shortest secret accepted for TCP: guessing it must be hopeless.
const MIN_SECRET_LEN: usize = 16;

fn listen_from_args() -> Result<Listen, String> {
    let mut args = std::env::args_os().skip(1);
    let (mut socket, mut tcp, mut egress, mut sandbox_id) = (None, None, None, None);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--egress") => {
                let relay = args
                    .next()
                    .ok_or("--egress needs ADDRESS:PORT=SOCKET or ADDRESS:PORT=tcp:HOST:PORT")?;
                egress = Some(egress_relay::EgressRelay::parse(&relay.to_string_lossy())?);
            }
            Some("--sandbox-id") => {
                let id = args.next().ok_or("--sandbox-id needs an id")?;
                sandbox_id = Some(id.to_string_lossy().into_owned());
            }
            Some("--listen") => {
                socket = Some(PathBuf::from(args.next().ok_or("--listen needs a path")?));
            }
            Some("--listen-tcp") => {
                let addr = args.next().ok_or("--listen-tcp needs an address")?;
                let addr = addr.to_string_lossy();
                tcp = Some(
                    addr.parse::<SocketAddr>()
                        .map_err(|err| format!("--listen-tcp {addr}: {err}"))?,
                );
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
    if socket.is_none() && tcp.is_none() {
        socket = std::env::var_os("KILN_AGENT_SOCKET").map(PathBuf::from);
    }
    let secret = std::env::var("KILN_AGENT_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    if tcp.is_some() && secret.as_ref().is_none_or(|s| s.len() < MIN_SECRET_LEN) {
        return Err(format!(
            "--listen-tcp needs KILN_AGENT_SECRET of at least {MIN_SECRET_LEN} characters"
        ));
    }
    if socket.is_none() && tcp.is_none() {
        return Err(format!("no socket path or TCP address given\n{USAGE}"));
    }
    Ok(Listen {
        socket,
        tcp,
        secret,
        egress,
        sandbox_id,
    })
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
