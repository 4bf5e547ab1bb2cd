//! Disk and memory limits that hold, and admission control, on real sandboxes: a full
//! disk is the sandbox's `ENOSPC`, `/tmp` counts as disk, all sandboxes together stay
//! within the node's memory budget, and a create past the budget is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_protocol::ExecRequest;
use kiln_runtime::local::LocalSpec;
use kiln_runtime::{Limits, Resource, Runtime, RuntimeError, SandboxSpec};
use support::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

async fn sh(rt: &TestRuntime, sandbox: &str, script: &str) -> (i32, String) {
    sh_within(rt, sandbox, script, 300_000).await
}

fn spec(name: &str, memory: u64, disk: u64) -> LocalSpec {
    let mut spec = busybox_spec(name);
    spec.limits = Limits {
        memory_bytes: Some(memory),
        disk_bytes: Some(disk),
        ..Limits::default()
    };
    spec
}

/// The disk limit of the ENOSPC test: 1 GiB, unless `KILN_TEST_DISK_MIB` says less (the
/// cgroup v2 VM, whose disk is its 2 GiB of RAM).
fn disk_limit() -> u64 {
    std::env::var("KILN_TEST_DISK_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(GIB, |mib| mib * MIB)
}

fn free_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    stat.blocks_available() * stat.fragment_size()
}

/// Loop devices backed by a file under `dir`.
/// The loop devices left under `dir` once the kernel has caught up: an autoclear device
/// is detached by a work item after its last close (an unmount), not within the unmount
/// call, so a loaded machine may show it for a moment. Waits up to 5 s.
fn loops_left_under(dir: &Path) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = loops_under(dir);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn loops_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|backing| Path::new(backing.trim()).starts_with(dir))
        .collect()
}

/// The parent cgroup directory that holds the memory budget.
fn memory_parent(rt: &TestRuntime) -> PathBuf {
    rt.cgroup_parents()
        .into_iter()
        .find(|p| p.join("memory.limit_in_bytes").exists() || p.join("memory.max").exists())
        .expect("a memory parent cgroup")
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_5_gb_with_a_1_gb_limit_stops_with_enospc_and_costs_the_host_at_most_the_limit() {
    if !prerequisites() {
        return;
    }
    let limit = disk_limit();
    let rt = runtime_with(|c| c.default_disk_bytes = Some(limit));
    rt.create_local(spec("full", 2 * GIB, limit)).await.unwrap();
    rt.create_local(spec("neighbour", 2 * GIB, limit))
        .await
        .unwrap();
    let (_, df) = sh(&rt, "full", "df -k / | tail -n 1").await;
    let size_kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        size_kib <= limit / 1024 && size_kib > limit / 1024 * 9 / 10,
        "df inside shows the limit: {df}"
    );

    let free_before = free_bytes(rt.root.path());
    let (_, out) = sh(
        &rt,
        "full",
        &format!(
            "dd if=/dev/zero of=/testbed/big bs=1M count={} 2>&1; echo rc=$?; sync",
            5 * limit / MIB
        ),
    )
    .await;
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    let free_after = free_bytes(rt.root.path());
    let image = rt.sandbox_dir(&id("full")).join("disk.img");
    let allocated = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(
        allocated <= limit,
        "the image holds {allocated} bytes on the host"
    );
    // Other processes on this host write too: allow them half the limit meanwhile.
    // Without the limit the drop is the full five times the limit.
    let dropped = free_before.saturating_sub(free_after);
    assert!(
        dropped <= limit + limit / 2,
        "host free space dropped {} MiB",
        dropped / MIB
    );
    let (_, size) = sh(&rt, "full", "stat -c %s /testbed/big").await;
    let size: u64 = size.trim().parse().unwrap();
    assert!(
        size > limit * 9 / 10 && size <= limit,
        "stopped at {} MiB",
        size / MIB
    );

    // The neighbour is unaffected; the full sandbox works and recovers space.
    let (code, out) = sh(&rt, "neighbour", "echo fine > /testbed/f && cat /testbed/f").await;
    assert_eq!((code, out.as_str()), (0, "fine\n"));
    let (code, out) = sh(
        &rt,
        "full",
        "rm /testbed/big && echo again > /testbed/small && cat /testbed/small",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "again\n"));

    // Destroyed, nothing is left: no mount, no loop device, no image.
    let dir = rt.sandbox_dir(&id("full"));
    rt.destroy(&id("full")).await.unwrap();
    assert!(mounted_under(&dir).is_empty());
    assert!(!dir.exists());
    assert_eq!(loops_left_under(&dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_tmp_hits_the_disk_limit_not_memory_and_the_next_command_works() {
    if !prerequisites() {
        return;
    }
    // More disk than memory, so what /tmp holds can only be on disk (a quarter of that in
    // the VM, whose disk is RAM).
    let disk = disk_limit() / 4;
    let rt = runtime_with(|c| c.default_disk_bytes = Some(disk));
    rt.create_local(spec("tmpfill", 128 * MIB, disk))
        .await
        .unwrap();
    let (_, out) = sh(&rt, "tmpfill", "stat -c %a /tmp; ls -A /tmp | wc -l").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1777", "0"]);

    let (code, out) = sh(
        &rt,
        "tmpfill",
        "dd if=/dev/zero of=/tmp/fill bs=1M 2>&1; echo rc=$?; stat -c %s /tmp/fill",
    )
    .await;
    assert_eq!(code, 0, "the shell survived the fill: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let size: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        size > disk * 8 / 10,
        "/tmp took only {} MiB of its {} MiB disk",
        size / MIB,
        disk / MIB
    );
    assert!(!rt.oom_killed(&id("tmpfill")).unwrap());
    let usage = rt.usage(&id("tmpfill")).await.unwrap();
    assert!(
        usage
            .disk_used_bytes
            .is_some_and(|used| used > disk * 8 / 10),
        "{usage:?}"
    );
    assert!(usage.pids.is_some_and(|n| n >= 1), "{usage:?}");
    assert!(usage.memory_peak_bytes.is_some_and(|m| m > 0), "{usage:?}");
    let start = Instant::now();
    let (code, out) = sh(&rt, "tmpfill", "echo next").await;
    assert_eq!((code, out.as_str()), (0, "next\n"));
    assert!(start.elapsed() < Duration::from_secs(1));

    // A fork from a snapshot keeps the sandbox's files but starts with an empty /tmp.
    sh(
        &rt,
        "tmpfill",
        "rm /tmp/fill; echo kept > /root/kept; echo gone > /tmp/gone",
    )
    .await;
    let snapshot = rt.snapshot(&id("tmpfill")).await.unwrap();
    let mut fork = SandboxSpec::fork(id("fork"), &snapshot);
    fork.limits = spec("fork", 128 * MIB, disk).limits;
    rt.create(fork).await.unwrap();
    let (_, out) = sh(
        &rt,
        "fork",
        "cat /root/kept; ls -A /tmp | wc -l; stat -c %a /tmp",
    )
    .await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["kept", "0", "1777"]
    );
    rt.destroy(&id("fork")).await.unwrap();
    rt.remove_snapshot(&snapshot.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_20_gib_budget_and_2x_the_21st_2_gib_sandbox_is_refused() {
    if !prerequisites() {
        return;
    }
    let rt = runtime_with(|c| {
        c.memory_budget = Some(20 * GIB);
        c.memory_overcommit = 2.0;
        c.default_disk_bytes = Some(64 * MIB);
    });
    for n in 0..20 {
        rt.create_local(spec(&format!("s{n}"), 2 * GIB, 64 * MIB))
            .await
            .unwrap();
    }
    assert_eq!(rt.limits_held().0, 40 * GIB);
    assert_eq!(
        read_number(&memory_parent(&rt).join(
            if memory_parent(&rt).join("memory.limit_in_bytes").exists() {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            }
        )),
        20 * GIB,
        "the parent cgroup of all sandboxes holds the budget"
    );

    let err = rt
        .create_local(spec("s20", 2 * GIB, 64 * MIB))
        .await
        .unwrap_err();
    match &err {
        RuntimeError::Capacity {
            resource,
            retry_after,
            ..
        } => {
            assert_eq!(*resource, Resource::Memory);
            assert!(*retry_after > Duration::ZERO);
        }
        other => panic!("expected Capacity, got {other}"),
    }
    assert!(
        !rt.sandbox_dir(&id("s20")).exists(),
        "a refused create touches nothing"
    );
    let err = rt
        .reserve(&id("s20"), &spec("s20", 2 * GIB, 64 * MIB).limits)
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Capacity { .. }), "{err}");

    // A destroy gives the room back; a reservation holds it for its create only.
    rt.destroy(&id("s3")).await.unwrap();
    rt.reserve(&id("s20"), &spec("s20", 2 * GIB, 64 * MIB).limits)
        .unwrap();
    assert!(rt
        .create_local(spec("other", 2 * GIB, 64 * MIB))
        .await
        .is_err());
    rt.create_local(spec("s20", 2 * GIB, 64 * MIB))
        .await
        .unwrap();
    // Released without a create, a reservation frees its room too.
    rt.destroy(&id("s4")).await.unwrap();
    rt.reserve(&id("later"), &spec("later", 2 * GIB, 64 * MIB).limits)
        .unwrap();
    rt.release(&id("later"));
    rt.create_local(spec("other", 2 * GIB, 64 * MIB))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hogs_in_many_sandboxes_end_inside_them_within_the_budget() {
    if !prerequisites() {
        return;
    }
    // Each hog stays under its own 300 MiB limit (≈ 200 MiB at its peak, 128 MiB held),
    // but three together pass the 192 MiB budget of all sandboxes.
    const BUDGET: u64 = 192 * MIB;
    let rt = runtime_with(|c| {
        c.memory_budget = Some(BUDGET);
        c.memory_overcommit = 5.0;
        c.default_disk_bytes = Some(64 * MIB);
    });
    let names = ["hog-a", "hog-b", "hog-c"];
    for name in names {
        rt.create_local(spec(name, 300 * MIB, 64 * MIB))
            .await
            .unwrap();
    }
    let hog = "awk 'BEGIN { s = \"xxxxxxxx\"; while (length(s) < 100000000) s = s s; \
               system(\"sleep 3\"); print length(s) }'";
    let runs = names.map(|name| {
        let rt = &rt;
        async move {
            rt.exec(&id(name), ExecRequest::shell(hog).timeout_ms(120_000))
                .await
                .unwrap()
        }
    });
    let [a, b, c] = runs;
    let (a, b, c) = tokio::join!(a, b, c);
    let killed = [&a, &b, &c]
        .iter()
        .filter(|done| done.signal == Some(9))
        .count();
    assert!(killed >= 1, "no hog was killed: {a:?} {b:?} {c:?}");
    let oom_in_sandboxes = names
        .iter()
        .filter(|n| rt.oom_killed(&id(n)).unwrap())
        .count();
    assert!(oom_in_sandboxes >= 1, "the kernel killed inside a sandbox");
    let parent = memory_parent(&rt);
    let peak_file = ["memory.max_usage_in_bytes", "memory.peak"]
        .into_iter()
        .map(|f| parent.join(f))
        .find(|p| p.exists());
    if let Some(peak_file) = peak_file {
        let peak = read_number(&peak_file);
        assert!(
            peak <= BUDGET,
            "all sandboxes together peaked at {} MiB",
            peak / MIB
        );
    }
    // Every agent survived: each sandbox still answers.
    for name in names {
        let (code, out) = sh(&rt, name, "echo alive").await;
        assert_eq!((code, out.as_str()), (0, "alive\n"), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_servers_disks_are_cleaned_up_by_reconcile() {
    if !prerequisites() {
        return;
    }
    let survivor = runtime_with(|c| c.default_disk_bytes = Some(64 * MIB));
    let mut config = kiln_runtime::local::LocalConfig::new(survivor.root.path(), agent_binary());
    config.default_disk_bytes = Some(64 * MIB);
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let before = kiln_runtime::local::LocalRuntime::new(config).unwrap();
    before
        .create_local(spec("orphan", GIB, 64 * MIB))
        .await
        .unwrap();
    before
        .create_local(spec("keep", GIB, 64 * MIB))
        .await
        .unwrap();
    sh_on(&before, "keep", "echo state > /root/state").await;
    let dir = before.sandbox_dir(&id("orphan"));
    assert_eq!(
        loops_under(&dir).len(),
        1,
        "one loop device per sandbox disk"
    );
    drop(before);

    let report = survivor.reconcile(&[id("keep")]).await.unwrap();
    assert_eq!(report.removed, ["orphan"]);
    assert!(mounted_under(&dir).is_empty());
    assert_eq!(loops_left_under(&dir), Vec::<String>::new());
    // The adopted sandbox's limits count against the budget again.
    assert_eq!(survivor.limits_held(), (GIB, 64 * MIB));
    let (code, out) = sh(&survivor, "keep", "cat /root/state").await;
    assert_eq!((code, out.as_str()), (0, "state\n"));
    survivor.shutdown().await.unwrap();
    assert!(mounted_under(survivor.root.path()).is_empty());
    assert_eq!(loops_left_under(survivor.root.path()), Vec::<String>::new());
}

async fn sh_on(rt: &kiln_runtime::local::LocalRuntime, sandbox: &str, script: &str) {
    let done = rt
        .exec(&id(sandbox), ExecRequest::shell(script))
        .await
        .unwrap();
    assert_eq!(done.exit_code, 0);
}

/// Numbers for the record (not an assertion): create → ready with and without the disk
/// limit, alternating so both see the same host. `cargo test -p kiln-runtime --test
/// limits -- --ignored --nocapture create_time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn create_time_with_and_without_the_disk_limit() {
    if !prerequisites() {
        return;
    }
    let n: usize = std::env::var("KILN_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rt = runtime_with(|c| {
        c.memory_overcommit = 1000.0;
        c.disk_overcommit = 1000.0;
    });
    rt.create_local(busybox_spec("warm")).await.unwrap();
    rt.destroy(&id("warm")).await.unwrap();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..n {
        for limited in [true, false] {
            let mut spec = busybox_spec(&format!("c{i}-{limited}"));
            if !limited {
                spec.limits.disk_bytes = None;
            }
            let id = spec.id.clone();
            let t = Instant::now();
            rt.create_local(spec).await.unwrap();
            if limited { &mut with } else { &mut without }.push(t.elapsed());
            rt.destroy(&id).await.unwrap();
        }
        // The pool refills between rounds, as between real creates.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, mut samples) in [("with disk limit", with), ("without", without)] {
        samples.sort();
        let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
        println!(
            "create -> ready {name:<16} n={} p50 {:.2?} p90 {:.2?} max {:.2?}",
            samples.len(),
            at(0.5),
            at(0.9),
            samples[samples.len() - 1]
        );
    }
}

/// A process that opens the runtime without running sandboxes (`kiln users create` and the
/// other CLI commands open it through `Kiln::open`) must leave nothing mounted: the disk
/// pool starts with the server's reconcile or the first create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_the_runtime_mounts_no_disk() {
    if !prerequisites() {
        return;
    }
    let rt = runtime_with(|c| c.default_disk_bytes = Some(64 * MIB));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(mounted_under(rt.root.path()), Vec::<String>::new());
    rt.reconcile(&[]).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while mounted_under(&rt.root.path().join("disks")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "reconcile did not start the disk pool"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    rt.shutdown().await.unwrap();
    assert_eq!(mounted_under(rt.root.path()), Vec::<String>::new());
}

/// `runtime.disk_pool` reaches the local backend through `kiln_runtime::open`: the pool
/// fills to that many disks, not the default 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_disk_pool_size_is_what_fills() {
    if !prerequisites() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let config = kiln_config::RuntimeConfig {
        agent_binary: Some(agent_binary()),
        disk_mib: 64,
        disk_pool: 2,
        ..kiln_config::RuntimeConfig::default()
    };
    let opened = kiln_runtime::open(&config, data.path(), &data.path().join("images"))
        .unwrap_or_else(|e| panic!("{}", e.reason));
    let disks = data.path().join("runtime").join("disks");
    // The pool's own (private) mount, then one mount per ready disk.
    let entries = || mounted_under(&disks).len().saturating_sub(1);
    opened.runtime.reconcile(&[]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while entries() < 2 {
        assert!(Instant::now() < deadline, "the pool did not fill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The refill pauses between disks; give a pool of the default size time to go on.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(entries(), 2, "{:?}", mounted_under(&disks));
    opened.runtime.shutdown().await.unwrap();
    assert_eq!(mounted_under(data.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_shm_is_bounded_and_charged_to_the_sandbox() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    // 256 MiB of memory: a 64 MiB /dev/shm.
    rt.create_local(spec("shm", 256 * MIB, GIB)).await.unwrap();
    // The cgroup v2 VM's host has no /dev/shm; there, nothing to compare.
    let host_shm = Path::new("/dev/shm");
    let host_shm_before = host_shm.is_dir().then(|| free_bytes(host_shm));
    let (code, out) = sh(
        &rt,
        "shm",
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=512 2>&1; echo rc=$?; \
         stat -c %s /dev/shm/fill; stat -c %a /dev/shm",
    )
    .await;
    assert_eq!(code, 0, "the shell survived the fill: {out}");
    assert!(out.contains("No space left on device"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let size: u64 = lines[lines.len() - 2].trim().parse().unwrap();
    assert!(
        size > 60 * MIB && size <= 64 * MIB,
        "/dev/shm took {} MiB",
        size / MIB
    );
    assert_eq!(lines[lines.len() - 1], "1777");
    // Charged to the sandbox's memory: its peak holds the 64 MiB.
    let usage = rt.usage(&id("shm")).await.unwrap();
    assert!(
        usage.memory_peak_bytes.is_some_and(|m| m >= 60 * MIB),
        "{usage:?}"
    );
    assert!(!rt.oom_killed(&id("shm")).unwrap());
    // The host's own /dev/shm did not pay for it (others may use it: allow some slack).
    if let Some(before) = host_shm_before {
        let after = free_bytes(host_shm);
        assert!(before.saturating_sub(after) < 32 * MIB);
    }
    // The rest of /dev takes no files; its devices still work.
    let (_, out) = sh(
        &rt,
        "shm",
        "touch /dev/x 2>&1; echo ok > /dev/null && echo null-works",
    )
    .await;
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("null-works"), "{out}");
    let (code, out) = sh(&rt, "shm", "rm /dev/shm/fill && echo next").await;
    assert_eq!((code, out.as_str()), (0, "next\n"));
}

/// An XFS filesystem on a loop device, mounted for the test and removed on drop.
struct XfsMount {
    dir: tempfile::TempDir,
}

impl XfsMount {
    /// `None` (the test skips) where mkfs.xfs is missing (scripts/test.sh installs it).
    fn new(size: u64) -> Option<XfsMount> {
        let Some(mkfs) = which("mkfs.xfs") else {
            eprintln!("SKIPPED: mkfs.xfs is missing (apt-get install xfsprogs)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-xfs-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let image = dir.path().join("xfs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(size)
            .unwrap();
        run(std::process::Command::new(mkfs)
            .args(["-q", "-f"])
            .arg(&image));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        Some(XfsMount { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        // The loop device was attached with autoclear by mount: unmounting frees it.
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn run(command: &mut std::process::Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_limit_holds_with_the_runtime_root_on_xfs() {
    if !prerequisites() {
        return;
    }
    let Some(xfs) = XfsMount::new(4 * GIB) else {
        return;
    };
    let fs_type = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(xfs.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fs_type.stdout).trim(), "xfs");
    // Declared after the mount, so dropped (shut down, its disks unmounted) before it.
    let limit = 256 * MIB;
    let rt = runtime_in(&xfs.path(), |c| c.default_disk_bytes = Some(limit));
    rt.create_local(spec("onxfs", 2 * GIB, limit))
        .await
        .unwrap();
    let (_, df) = sh(&rt, "onxfs", "df -k / | tail -n 1").await;
    let size_kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        size_kib <= limit / 1024 && size_kib > limit / 1024 * 8 / 10,
        "df inside shows the limit: {df}"
    );
    let free_before = free_bytes(&xfs.path());
    let (_, out) = sh(
        &rt,
        "onxfs",
        "dd if=/dev/zero of=/testbed/big bs=1M count=1024 2>&1; echo rc=$?; sync; \
         stat -c %s /testbed/big",
    )
    .await;
    assert!(out.contains("No space left on device"), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    let size: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        size > limit * 8 / 10 && size <= limit,
        "stopped at {} MiB",
        size / MIB
    );
    // Only this runtime writes to this filesystem: the drop is the limit, plus what the
    // disk pool's refill may have formatted meanwhile (a few MiB per image).
    let dropped = free_before.saturating_sub(free_bytes(&xfs.path()));
    assert!(
        dropped <= limit + limit / 4,
        "XFS free space dropped {} MiB",
        dropped / MIB
    );
    let image = rt.sandbox_dir(&id("onxfs")).join("disk.img");
    assert!(std::fs::metadata(&image).unwrap().blocks() * 512 <= limit);

    let dir = rt.sandbox_dir(&id("onxfs"));
    rt.destroy(&id("onxfs")).await.unwrap();
    assert!(mounted_under(&dir).is_empty());
    assert!(!dir.exists());
    assert_eq!(loops_left_under(&dir), Vec::<String>::new());
}
