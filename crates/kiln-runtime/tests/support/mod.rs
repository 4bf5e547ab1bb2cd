//! Shared set-up of the privileged end-to-end tests: a busybox rootfs, the static agent,
//! a runtime in a fresh root.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln_runtime::local::{LocalConfig, LocalRuntime, LocalSpec, RootLayers};
use kiln_runtime::SandboxId;

/// Where the busybox test rootfs is cached between runs.
pub const BUSYBOX_ROOTFS: &str = "/var/cache/kiln-test/busybox-rootfs";

/// Why these tests cannot run here, if they cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the runtime tests need root".into());
    }
    if kiln_runtime::local::find_in_path("bwrap").is_none() {
        return Some("bubblewrap is not installed (apt-get install bubblewrap)".into());
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("busybox is not installed (apt-get install busybox-static)".into());
    }
    None
}

/// Returns false (test skipped) when prerequisites are missing; under `CI` it fails
/// instead, so a CI without them cannot pass silently.
pub fn prerequisites() -> bool {
    match missing_prerequisite() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => panic!("cannot run: {why}"),
        Some(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// A busybox-only root filesystem (built once, from Debian's busybox-static).
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let root = PathBuf::from(BUSYBOX_ROOTFS);
            if root.join("bin/sh").exists() {
                return root;
            }
            let tmp = PathBuf::from(format!("{BUSYBOX_ROOTFS}.tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            for dir in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
                std::fs::create_dir_all(tmp.join(dir)).unwrap();
            }
            std::fs::copy("/bin/busybox", tmp.join("bin/busybox")).unwrap();
            let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if applet != "busybox" {
                    std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet)).unwrap();
                }
            }
            std::fs::write(tmp.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
            std::fs::write(tmp.join("testbed/hello.txt"), "hello from the image\n").unwrap();
            match std::fs::rename(&tmp, &root) {
                Ok(()) => {}
                Err(_) => {
                    // Another test process won the race.
                    let _ = std::fs::remove_dir_all(&tmp);
                }
            }
            root
        })
        .clone()
}

/// The static agent, built once per test binary with `scripts/build-agent.sh`.
pub use kiln_test_support::agent_binary;

/// A runtime in a fresh root directory, removed (with everything in it) on drop.
pub struct TestRuntime {
    pub runtime: LocalRuntime,
    pub root: tempfile::TempDir,
}

impl std::ops::Deref for TestRuntime {
    type Target = LocalRuntime;
    fn deref(&self) -> &LocalRuntime {
        &self.runtime
    }
}

impl Drop for TestRuntime {
    /// Also after a failed assertion: nothing may stay mounted or running.
    fn drop(&mut self) {
        let runtime = &self.runtime;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                if let Err(err) = rt.block_on(kiln_runtime::Runtime::shutdown(runtime)) {
                    eprintln!("shutdown after the test failed: {err}");
                }
            });
        });
    }
}

pub fn runtime() -> TestRuntime {
    runtime_with(|_| {})
}

/// A runtime in a fresh root directory with its configuration adjusted by `adjust`.
pub fn runtime_with(adjust: impl FnOnce(&mut LocalConfig)) -> TestRuntime {
    runtime_in(Path::new("/var/tmp"), adjust)
}

/// [`runtime_with`], its root a fresh directory under `parent` (e.g. another filesystem).
pub fn runtime_in(parent: &Path, adjust: impl FnOnce(&mut LocalConfig)) -> TestRuntime {
    let root = tempfile::Builder::new()
        .prefix("kiln-rt-test-")
        .tempdir_in(parent)
        .unwrap();
    let mut config = LocalConfig::new(root.path(), agent_binary());
    // Admission is tested on its own (tests/limits.rs); elsewhere a small host (the
    // cgroup v2 VM has 2 GiB) must not refuse a test's second sandbox.
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    adjust(&mut config);
    let runtime = LocalRuntime::new(config).unwrap();
    TestRuntime { runtime, root }
}

/// A spec for the busybox rootfs.
pub fn busybox_spec(id: &str) -> LocalSpec {
    LocalSpec::new(
        SandboxId::new(id).unwrap(),
        RootLayers::single(busybox_rootfs()),
    )
}

pub fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

/// Runs `script` with the shell in `sandbox`, cut off after `timeout_ms`: the exit code and
/// stdout followed by stderr.
pub async fn sh_within(
    rt: &TestRuntime,
    sandbox: &str,
    script: &str,
    timeout_ms: u64,
) -> (i32, String) {
    use kiln_runtime::Runtime;
    let done = rt
        .exec(
            &id(sandbox),
            kiln_protocol::ExecRequest::shell(script).timeout_ms(timeout_ms),
        )
        .await
        .unwrap();
    let mut out = done.stdout.to_string_lossy();
    out.push_str(&done.stderr.to_string_lossy());
    (done.exit_code, out)
}

/// Asserts that `sandbox` still runs commands (its agent survived what the test did).
pub async fn assert_alive(rt: &TestRuntime, sandbox: &str) {
    let (code, out) = sh_within(rt, sandbox, "echo alive", 120_000).await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
}

/// Whether anything under `dir` is mounted (in this mount namespace).
pub fn mounted_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect()
}
