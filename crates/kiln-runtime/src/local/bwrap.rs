//! Starting a sandbox with bubblewrap: the namespaces, mounts and privileges of its
//! processes, with the agent as PID 1.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::error::{Result, RuntimeError};
use crate::local::launch_ns::LaunchNs;

/// Where the agent binary appears inside every sandbox (read-only bind mount).
pub const AGENT_PATH: &str = "/.kiln/agent";
/// The directory holding the agent's socket inside (sealed read-only once bound).
pub const RUN_DIR: &str = "/.kiln/run";
/// The agent's socket inside.
pub const SOCKET_PATH: &str = "/.kiln/run/agent.sock";
/// The socket's file name, the same on the host side of the bind mount.
pub const SOCKET_NAME: &str = "agent.sock";

/// How much of the sandbox's stderr (bwrap's and the agent's messages) is kept.
const STDERR_TAIL: usize = 16 * 1024;

/// What bubblewrap needs to start one sandbox.
pub struct BwrapLaunch<'a> {
    /// The bwrap executable.
    pub bwrap: &'a Path,
    /// The sandbox's merged overlay, its `/`.
    pub root: &'a Path,
    /// The agent binary on the host.
    pub agent: &'a Path,
    /// Bound over `/proc/cmdline` (the host's names its boot device and options).
    pub cmdline: &'a Path,
    /// The host directory bound at [`RUN_DIR`].
    pub run_dir: &'a Path,
    /// Hostname inside.
    pub hostname: &'a str,
    /// Extra host directories bound read-write, after the root.
    pub binds: &'a [crate::local::spec::BindMount],
    /// The agent's environment, which every command inherits.
    pub env: &'a BTreeMap<String, String>,
    /// Compiled seccomp filters, one file each, all applied.
    pub seccomp_files: &'a [std::path::PathBuf],
    /// Opened `cgroup.procs` files the child joins before exec.
    pub cgroup_procs: Vec<File>,
    /// Size of `/dev/shm` ([`shm_bytes`]).
    pub shm_bytes: u64,
    /// The mount namespace bwrap starts in (see `launch_ns.rs`); `None`: the caller's.
    pub launch_ns: Option<LaunchNs>,
    /// The agent relays [`crate::EGRESS_PROXY_ADDR`] to [`crate::egress_socket::SOCKET_PATH`].
    pub egress: bool,
}

/// `/dev/shm` when memory is unlimited (Docker's default size).
const SHM_UNLIMITED_MEMORY: u64 = 64 << 20;

/// The size of a sandbox's `/dev/shm`: a quarter of its memory limit. It is a tmpfs of
/// its own, whose pages are charged to the sandbox's memory cgroup, so it can neither
/// grow past this nor past the sandbox's memory; writing beyond is `ENOSPC` inside.
pub fn shm_bytes(limits: &crate::spec::Limits) -> u64 {
    limits
        .memory_bytes
        .map_or(SHM_UNLIMITED_MEMORY, |m| (m / 4).max(1 << 20))
}

/// A started sandbox process.
pub struct Launched {
    /// bubblewrap's monitor process on the host, our child.
    pub child: Child,
    /// Pid of the sandbox's PID 1 (the agent) on the host.
    pub init_pid: u32,
    /// The latest bytes of stderr, filled in the background.
    pub stderr_tail: Arc<Mutex<Vec<u8>>>,
}

/// Starts bubblewrap. Returns once bwrap reported the sandbox init's pid (or failed).
pub async fn launch(mut spec: BwrapLaunch<'_>) -> Result<Launched> {
    let mut launch_ns = spec.launch_ns.take();
    let (info_read, info_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::io("cannot create a pipe for", spec.bwrap, e.into()))?;
    // Each sandbox opens the filters anew: bwrap reads them to the end, and a shared
    // file offset would race between concurrent starts.
    let mut seccomp_fds: Vec<OwnedFd> = Vec::new();
    for path in spec.seccomp_files {
        let file = File::open(path).map_err(|e| RuntimeError::io("cannot open", path, e))?;
        seccomp_fds.push(file.into());
    }
    let inherit: Vec<RawFd> = std::iter::once(info_write.as_raw_fd())
        .chain(seccomp_fds.iter().map(AsRawFd::as_raw_fd))
        .collect();
    let procs: Vec<RawFd> = spec.cgroup_procs.iter().map(AsRawFd::as_raw_fd).collect();

    let mut cmd = Command::new(spec.bwrap);
    cmd.args(arguments(&spec, info_write.as_raw_fd(), &seccomp_fds))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe syscalls (write, fcntl, and those of `LaunchNs::enter`) on
    // descriptors the parent keeps open until `spawn` returns and memory allocated
    // before the fork; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &procs {
                // Writing "0" moves the writer itself: bwrap and everything it starts
                // are in the sandbox's cgroup from their first instruction.
                // SAFETY: fd is an open cgroup.procs file; the buffer is a static byte.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(ns) = launch_ns.as_mut() {
                ns.enter()?;
            }
            for &fd in &inherit {
                // SAFETY: fd is open; clearing FD_CLOEXEC lets bwrap inherit it.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError::io("cannot start", spec.bwrap, e))?;
    drop(info_write);
    drop(seccomp_fds);
    drop(spec.cgroup_procs);

    let stderr_tail = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let tail = Arc::clone(&stderr_tail);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut tail) = tail.lock() {
                    tail.extend_from_slice(&buf[..n]);
                    let excess = tail.len().saturating_sub(STDERR_TAIL);
                    tail.drain(..excess);
                }
            }
        });
    }

    // bwrap writes `{"child-pid": N}` as soon as it has cloned the sandbox's init; the
    // pipe's EOF only comes later (when the init execs), so stop at the closing brace.
    let info = tokio::task::spawn_blocking(move || {
        let mut file = File::from(info_read);
        let mut text = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            let n = file.read(&mut buf)?;
            text.extend_from_slice(&buf[..n]);
            if n == 0 || text.contains(&b'}') {
                return Ok::<_, std::io::Error>(String::from_utf8_lossy(&text).into_owned());
            }
        }
    })
    .await
    .map_err(|e| RuntimeError::io("lost the reader of", spec.bwrap, std::io::Error::other(e)))?
    .map_err(|e| RuntimeError::io("cannot read the info of", spec.bwrap, e))?;
    let init_pid = parse_child_pid(&info);
    match init_pid {
        Some(init_pid) => Ok(Launched {
            child,
            init_pid,
            stderr_tail,
        }),
        None => {
            let status = child.wait().await.ok();
            let tail = tail_text(&stderr_tail);
            Err(RuntimeError::HostNotReady(format!(
                "bubblewrap exited ({status:?}) without starting the sandbox: {tail}"
            )))
        }
    }
}

/// The stderr kept so far, as text.
pub fn tail_text(tail: &Arc<Mutex<Vec<u8>>>) -> String {
    tail.lock()
        .map(|t| String::from_utf8_lossy(&t).trim().to_string())
        .unwrap_or_default()
}

fn parse_child_pid(info: &str) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(info.trim()).ok()?;
    value.get("child-pid")?.as_u64()?.try_into().ok()
}

/// bwrap's command line. Mount order matters: the root first, then what is mounted on
/// top of it; the agent's directories last so nothing can shadow them.
fn arguments(spec: &BwrapLaunch<'_>, info_fd: RawFd, seccomp: &[OwnedFd]) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    push(&[
        "--new-session".as_ref(), // no TIOCSTI into a terminal outside
        "--unshare-pid".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-net".as_ref(), // fresh netns: only lo, up
        "--unshare-cgroup-try".as_ref(),
        "--hostname".as_ref(),
        spec.hostname.as_ref(),
        "--bind".as_ref(),
        spec.root.as_os_str(),
        "/".as_ref(),
    ]);
    for bind in spec.binds {
        push(&[
            "--bind".as_ref(),
            bind.source.as_os_str(),
            bind.target.as_ref(),
        ]);
    }
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--ro-bind".as_ref(),
        spec.cmdline.as_os_str(),
        "/proc/cmdline".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        // No tmpfs on /tmp: it is a directory of the writable layer (see disk.rs), so
        // filling it hits the disk limit, not the memory limit.
        "--ro-bind".as_ref(),
        spec.agent.as_os_str(),
        AGENT_PATH.as_ref(),
        "--bind".as_ref(),
        spec.run_dir.as_os_str(),
        RUN_DIR.as_ref(),
        "--chdir".as_ref(),
        "/".as_ref(),
        "--clearenv".as_ref(),
    ]);
    // bwrap's `/dev` is a tmpfs as large as the host allows, `/dev/shm` a directory in
    // it: give `/dev/shm` a bounded tmpfs of its own, then make the rest of `/dev`
    // read-only (its device nodes still work; only new files there are refused).
    let shm = spec.shm_bytes.to_string();
    push(&[
        "--perms".as_ref(),
        "1777".as_ref(),
        "--size".as_ref(),
        shm.as_ref(),
        "--tmpfs".as_ref(),
        "/dev/shm".as_ref(),
        "--remount-ro".as_ref(),
        "/dev".as_ref(),
    ]);
    for (key, value) in spec.env {
        push(&["--setenv".as_ref(), key.as_ref(), value.as_ref()]);
    }
    push(&["--cap-drop".as_ref(), "ALL".as_ref()]);
    let info = info_fd.to_string();
    push(&["--info-fd".as_ref(), info.as_ref()]);
    for fd in seccomp {
        let fd = fd.as_raw_fd().to_string();
        push(&["--add-seccomp-fd".as_ref(), fd.as_ref()]);
    }
    push(&[
        "--as-pid-1".as_ref(),
        "--".as_ref(),
        AGENT_PATH.as_ref(),
        "--listen".as_ref(),
        SOCKET_PATH.as_ref(),
    ]);
    if spec.egress {
        let [flag, relay] = crate::egress_socket::agent_args();
        push(&[flag.as_ref(), relay.as_ref()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_binds_come_after_the_root_and_before_the_agent_runs() {
        let env = BTreeMap::new();
        let binds = [crate::local::spec::BindMount {
            source: "/host/job/workspace".into(),
            target: "/workspace".into(),
        }];
        let spec = BwrapLaunch {
            bwrap: Path::new("/usr/bin/bwrap"),
            root: Path::new("/r/merged"),
            agent: Path::new("/a/kiln-agent"),
            cmdline: Path::new("/a/cmdline"),
            run_dir: Path::new("/r/run"),
            hostname: "kiln",
            binds: &binds,
            env: &env,
            seccomp_files: &[],
            cgroup_procs: Vec::new(),
            shm_bytes: 512 << 20,
            launch_ns: None,
            egress: false,
        };
        let args: Vec<String> = arguments(&spec, 3, &[])
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |needle: &[&str]| {
            args.windows(needle.len())
                .position(|w| w == needle)
                .unwrap_or_else(|| panic!("{needle:?} not in {args:?}"))
        };
        let root = at(&["--bind", "/r/merged", "/"]);
        let bind = at(&["--bind", "/host/job/workspace", "/workspace"]);
        let agent = at(&["--", AGENT_PATH]);
        assert!(root < bind && bind < agent, "{args:?}");
        let dev = at(&["--dev", "/dev"]);
        let shm = at(&["--size", "536870912", "--tmpfs", "/dev/shm"]);
        let ro = at(&["--remount-ro", "/dev"]);
        assert!(dev < shm && shm < ro && ro < agent, "{args:?}");
    }

    #[test]
    fn parses_bwrap_info() {
        assert_eq!(
            parse_child_pid("{\n    \"child-pid\": 4242\n}\n"),
            Some(4242)
        );
        assert_eq!(parse_child_pid(""), None);
    }
}
