//! What an agent's code can still try from inside its sandbox: stop or freeze the agent,
//! leave processes behind that clog the next command, open kernel sockets that reach
//! past the network namespace, read the host's paths and boot options.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_protocol::{ExecDone, ExecRequest};
use kiln_runtime::local::{LocalSpec, RootLayers};
use kiln_runtime::Runtime;

use super::sh;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_from_inside_change_nothing() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("sig1")).await.unwrap();
    assert_signals_change_nothing(&rt, "sig1").await;
}

/// SIGTERM/INT/HUP reach the agent (it blocks them) and are ignored as sent from inside;
/// the kernel drops SIGKILL and SIGSTOP sent to a namespace's init from within.
async fn assert_signals_change_nothing(rt: &TestRuntime, sandbox: &str) {
    crate::shared::assert_signals_to_init_ignored(&rt.runtime, &id(sandbox)).await;
    // Seen from the host: the agent runs, neither stopped nor dying.
    let states: Vec<String> = rt
        .pids(&id(sandbox))
        .unwrap()
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let is_agent = status.lines().any(|l| l == "Name:\tagent");
            let state = status.lines().find(|l| l.starts_with("State:"))?;
            is_agent.then(|| state.to_string())
        })
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        states[0].contains("(sleeping)") || states[0].contains("(running)"),
        "{states:?}"
    );
}

/// Set in the probe's environment: `signal_probe` then queues a forged SIGTERM to PID 1.
const SIGNAL_PROBE_ENV: &str = "KILN_TEST_SIGNAL_PROBE";

/// Not a test of its own: run inside a sandbox by
/// `a_forged_sender_does_not_stop_the_agent`. `rt_sigqueueinfo` lets the sender fill in
/// the siginfo: here `si_pid` 0, which is what a sender outside the namespace shows.
#[test]
fn signal_probe() {
    if std::env::var_os(SIGNAL_PROBE_ENV).is_none() {
        return;
    }
    // SAFETY: an all-zero siginfo_t is valid (si_pid and si_uid 0 are the forgery).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = libc::SIGTERM;
    info.si_code = libc::SI_QUEUE;
    // SAFETY: the pointer is to a live siginfo_t, which the kernel only reads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            1,
            libc::SIGTERM,
            std::ptr::from_ref(&info),
        )
    };
    let errno = if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    };
    println!("kiln-probe:sigqueue={errno}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sender_does_not_stop_the_agent() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let (_layer, done) = run_probe(
        &rt,
        "forge1",
        &["--exact", "inside::signal_probe", "--nocapture"],
        SIGNAL_PROBE_ENV,
    )
    .await;
    let out = done.stdout.to_string_lossy();
    assert!(out.contains("kiln-probe:sigqueue=0"), "not queued: {out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_alive(&rt, "forge1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_cannot_be_inspected_or_rewritten() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("mem1")).await.unwrap();
    assert_agent_is_out_of_reach(&rt, "mem1").await;
}

/// Same uid as the agent: only its being non-dumpable stops these.
async fn assert_agent_is_out_of_reach(rt: &TestRuntime, sandbox: &str) {
    for attempt in [
        "cat /proc/1/environ",
        "readlink /proc/1/exe",
        "readlink /proc/1/fd/0",
        "exec 3</proc/1/mem && echo opened",
        "exec 3<>/proc/1/mem && echo opened",
    ] {
        let (code, out) = sh(rt, sandbox, attempt).await;
        assert_ne!(code, 0, "{attempt} succeeded: {out}");
    }
    let (code, out) = sh(rt, sandbox, "cat /proc/1/comm").await;
    assert_eq!((code, out.as_str()), (0, "agent\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_command_starts_outlives_it() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    // The default limits: 512 tasks, which a fork bomb fills in an instant.
    rt.create_local(busybox_spec("left1")).await.unwrap();
    crate::shared::assert_leftovers_are_killed(
        &rt.runtime,
        &id("left1"),
        "bomb() { bomb | bomb & }; bomb",
    )
    .await;
}

/// Set in the probe's environment: `socket_probe` then tries every family.
const PROBE_ENV: &str = "KILN_TEST_SOCKET_PROBE";

/// Name, family, type, protocol. Only the allowed ones are ever tried on the host: a
/// socket of an absent family makes the kernel load its module.
const PROBES: &[(&str, i32, i32, i32)] = &[
    ("unix", libc::AF_UNIX, libc::SOCK_STREAM, 0),
    ("inet", libc::AF_INET, libc::SOCK_STREAM, 0),
    ("inet6", libc::AF_INET6, libc::SOCK_DGRAM, 0),
    ("netlink-route", libc::AF_NETLINK, libc::SOCK_RAW, 0),
    ("netlink-diag", libc::AF_NETLINK, libc::SOCK_RAW, 4),
    ("netlink-uevent", libc::AF_NETLINK, libc::SOCK_RAW, 15),
    ("vsock", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
    ("packet", libc::AF_PACKET, libc::SOCK_DGRAM, 0),
    ("alg", libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
    ("key", libc::AF_KEY, libc::SOCK_RAW, 2),
    ("rds", libc::AF_RDS, libc::SOCK_SEQPACKET, 0),
    ("tipc", libc::AF_TIPC, libc::SOCK_RDM, 0),
    ("bluetooth", libc::AF_BLUETOOTH, libc::SOCK_RAW, 0),
    ("xdp", libc::AF_XDP, libc::SOCK_RAW, 0),
];

const ALLOWED: &[&str] = &["unix", "inet", "inet6", "netlink-route", "netlink-diag"];

/// `socket()` for each probe `wanted` accepts: 0 when it opened, else the errno.
fn probe_sockets(wanted: impl Fn(&str) -> bool) -> BTreeMap<String, i32> {
    let mut results = BTreeMap::new();
    for &(name, family, kind, protocol) in PROBES.iter().filter(|p| wanted(p.0)) {
        // SAFETY: socket() takes no pointers; a descriptor it returns is closed at once.
        let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, protocol) };
        let errno = if fd >= 0 {
            // SAFETY: fd was just returned by socket() and is closed once.
            unsafe { libc::close(fd) };
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        };
        results.insert(name.to_string(), errno);
    }
    results
}

/// Not a test of its own: the body `unneeded_socket_families_are_refused` runs inside a
/// sandbox (this executable, re-run there with [`PROBE_ENV`] set).
#[test]
fn socket_probe() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    for (name, errno) in probe_sockets(|_| true) {
        // libtest may have started the line ("test … ... "): the marker finds it.
        println!("kiln-probe:{name}={errno}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unneeded_socket_families_are_refused() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let (_layer, done) = run_probe(
        &rt,
        "sock1",
        &[
            "--exact",
            "inside::socket_probe",
            "--nocapture",
            "--test-threads=1",
        ],
        PROBE_ENV,
    )
    .await;
    let out = done.stdout.to_string_lossy();
    assert_eq!(done.exit_code, 0, "{out}{}", done.stderr.to_string_lossy());
    let inside: BTreeMap<String, i32> = out
        .lines()
        .filter_map(|l| l.split_once("kiln-probe:")?.1.split_once('='))
        .map(|(name, errno)| (name.to_string(), errno.parse().unwrap()))
        .collect();
    assert_eq!(inside.len(), PROBES.len(), "{out}");
    let host = probe_sockets(|name| ALLOWED.contains(&name));
    for (name, errno) in &inside {
        if ALLOWED.contains(&name.as_str()) {
            assert_eq!(Some(errno), host.get(name), "{name}: inside vs host");
        } else {
            assert_eq!(*errno, libc::EAFNOSUPPORT, "{name} is not refused: {out}");
        }
    }
}

/// Creates `sandbox` with this test executable as `/probe` (see [`probe_layer`]) over the
/// busybox root and runs it with `args` and `probe_env` set: the layer (removed when
/// dropped, so kept until the sandbox is done with) and what the probe did.
async fn run_probe(
    rt: &TestRuntime,
    sandbox: &str,
    args: &[&str],
    probe_env: &str,
) -> (tempfile::TempDir, ExecDone) {
    let layer = tempfile::Builder::new()
        .prefix("kiln-probe-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let library_path = probe_layer(layer.path());
    let layers = RootLayers::new(vec![layer.path().to_path_buf(), busybox_rootfs()]);
    rt.create_local(LocalSpec::new(id(sandbox), layers))
        .await
        .unwrap();
    let argv = std::iter::once("/probe").chain(args.iter().copied());
    let done = rt
        .exec(
            &id(sandbox),
            ExecRequest::argv(argv)
                .env(probe_env, "1")
                .env("LD_LIBRARY_PATH", library_path)
                .timeout_ms(60_000),
        )
        .await
        .unwrap();
    (layer, done)
}

/// Fills `layer` with this test executable as `/probe` and the shared libraries it runs
/// with (read from its own memory map), so it runs in a busybox root, which has no libc.
/// Returns the `LD_LIBRARY_PATH` to run it with.
fn probe_layer(layer: &Path) -> String {
    std::fs::copy(std::env::current_exe().unwrap(), layer.join("probe")).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libraries: BTreeSet<PathBuf> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .map(PathBuf::from)
        .collect();
    let mut dirs = BTreeSet::new();
    for library in &libraries {
        let copy = layer.join(library.strip_prefix("/").unwrap());
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(library, &copy).unwrap();
        dirs.insert(library.parent().unwrap().display().to_string());
        let name = library.file_name().unwrap().to_string_lossy();
        if name.starts_with("ld-linux") {
            // Where the executable asks for its loader (PT_INTERP on x86_64).
            std::fs::create_dir_all(layer.join("lib64")).unwrap();
            std::fs::copy(library, layer.join("lib64").join(name.as_ref())).unwrap();
        }
    }
    dirs.into_iter().collect::<Vec<_>>().join(":")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_and_boot_options_do_not_show_inside() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("paths1")).await.unwrap();
    let host_paths = [
        rt.root.path().to_path_buf(),
        busybox_rootfs(),
        agent_binary(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    ];
    assert_no_host_paths(&rt, "paths1", &host_paths).await;
}

/// Mount tables and the kernel command line show none of `host_paths`, nor the host's
/// boot options.
async fn assert_no_host_paths(rt: &TestRuntime, sandbox: &str, host_paths: &[PathBuf]) {
    let (code, out) = sh(
        rt,
        sandbox,
        "cat /proc/self/mountinfo /proc/1/mountinfo /proc/self/mounts /proc/cmdline",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for path in host_paths {
        let path = path.display().to_string();
        assert!(!out.contains(&path), "{path} shows inside:\n{out}");
    }
    let (_, cmdline) = sh(rt, sandbox, "cat /proc/cmdline").await;
    let host_cmdline = std::fs::read_to_string("/proc/cmdline").unwrap();
    assert_ne!(
        cmdline, host_cmdline,
        "the host's /proc/cmdline shows inside"
    );
}

/// Where the demo images are (`scripts/test.sh` builds them), or None (test skipped)
/// when absent and not required. `KILN_TEST_DEMO_IMAGES=required` (the CI step after the
/// images are built) makes their absence a failure.
fn demo_images() -> Option<(PathBuf, Vec<kiln_image::Image>)> {
    let dir = std::env::var_os("KILN_TEST_IMAGES_DIR").map_or_else(
        || PathBuf::from("/var/cache/kiln-test/images"),
        PathBuf::from,
    );
    let required = std::env::var("KILN_TEST_DEMO_IMAGES").is_ok_and(|v| v == "required");
    let images: Vec<kiln_image::Image> = kiln_image::ImageStore::open(&dir)
        .and_then(|store| store.list())
        .map(|all| {
            all.into_iter()
                .filter(|i| i.reference().starts_with("kiln-demo/"))
                .filter(|i| !i.reference().contains("/sample/"))
                .collect()
        })
        .unwrap_or_default();
    if images.is_empty() {
        let why = format!("no demo images in {}", dir.display());
        assert!(!required, "{why} (KILN_TEST_DEMO_IMAGES=required)");
        eprintln!("SKIPPED: {why}");
        return None;
    }
    Some((dir, images))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_images_keep_the_same_promises() {
    if !prerequisites() {
        return;
    }
    let Some((images_dir, images)) = demo_images() else {
        return;
    };
    let rt = runtime();
    for (n, image) in images.iter().enumerate() {
        let name = format!("demo{n}");
        eprintln!("{name}: {}", image.reference());
        rt.create_local(LocalSpec::from_image(id(&name), image))
            .await
            .unwrap();
        assert_signals_change_nothing(&rt, &name).await;
        assert_agent_is_out_of_reach(&rt, &name).await;
        crate::shared::assert_leftovers_are_killed(&rt.runtime, &id(&name), ":(){ :|:& };:").await;
        let host_paths = [
            rt.root.path().to_path_buf(),
            images_dir.clone(),
            agent_binary(),
        ];
        assert_no_host_paths(&rt, &name, &host_paths).await;
        if image.reference().contains("python") {
            // python3 must be there: a missing one fails instead of proving nothing.
            let (code, out) = sh(
                &rt,
                &name,
                "python3 -c 'import socket, errno\n\
                 socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n\
                 socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()\n\
                 for family in (socket.AF_VSOCK, socket.AF_ALG, socket.AF_PACKET):\n\
                 \x20   try:\n\
                 \x20       socket.socket(family, socket.SOCK_DGRAM).close()\n\
                 \x20       print(\"open\")\n\
                 \x20   except OSError as e:\n\
                 \x20       print(errno.errorcode[e.errno])'",
            )
            .await;
            assert_eq!(
                (code, out.as_str()),
                (0, "EAFNOSUPPORT\nEAFNOSUPPORT\nEAFNOSUPPORT\n")
            );
        }
        rt.destroy(&id(&name)).await.unwrap();
    }
}
