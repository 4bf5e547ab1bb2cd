//! Disk limits by project quotas on real sandboxes: the runtime root on a loop-mounted
//! XFS with `prjquota`, or an ext4 made with `-O quota,project` and mounted with
//! `prjquota`. The limit stops `dd` inside (XFS: `ENOSPC`; ext4: `EDQUOT`, which its
//! quota code returns), costs the host at most the limit, needs no mount or loop device
//! per sandbox, shows in the usage, and its project is freed on destroy and, after a
//! crash, by the next reconcile.
//!
//! The kernel must have project quotas (`CONFIG_XFS_QUOTA`, `CONFIG_QFMT_V2`): where
//! the `prjquota` mount fails the tests skip with a message, unless
//! `KILN_TEST_EXPECT_QUOTA=required` (the cgroup v2 VM, Debian's kernel, sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_runtime::local::{quota, DiskLimitMode, LocalSpec};
use kiln_runtime::{Limits, Runtime, RuntimeError};
use support::*;

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 64 * MIB;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Xfs,
    Ext4,
}

/// A filesystem with project quotas on a loop device, mounted for a test, removed on drop.
struct QuotaFs {
    dir: tempfile::TempDir,
}

impl QuotaFs {
    fn new(kind: Kind) -> Option<QuotaFs> {
        let (mkfs, args): (&str, &[&str]) = match kind {
            Kind::Xfs => ("mkfs.xfs", &["-q", "-f"]),
            Kind::Ext4 => ("mkfs.ext4", &["-q", "-F", "-O", "quota,project"]),
        };
        let Some(mkfs) = which(mkfs) else {
            return skip(&format!("{mkfs} is missing"));
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-quota-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(512 * MIB)
            .unwrap();
        run(Command::new(mkfs).args(args).arg(&image));
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop,prjquota"])
            .arg(&image)
            .arg(&mnt)
            .output()
            .unwrap();
        if !mounted.status.success() {
            return skip(&format!(
                "this kernel cannot mount {kind:?} with prjquota: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            ));
        }
        Some(QuotaFs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

fn skip(why: &str) -> Option<QuotaFs> {
    if std::env::var("KILN_TEST_EXPECT_QUOTA").as_deref() == Ok("required") {
        panic!("project quotas are required here: {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).unwrap();
    stat.blocks_available() * stat.fragment_size()
}

fn limited(name: &str) -> LocalSpec {
    let mut spec = busybox_spec(name);
    spec.limits = Limits {
        memory_bytes: Some(512 * MIB),
        disk_bytes: Some(LIMIT),
        ..Limits::default()
    };
    spec
}

/// The quota of project `id` once it is free, or as it is after 10 s: limits are cleared at
/// once, but XFS inactivates removed inodes in the background (and only then uncharges
/// them).
async fn freed(fs: &Path, id: u32) -> (u64, u64, u64, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let usage = quota::project_usage(fs, id).unwrap_or_default();
        if usage == (0, 0, 0, 0) || std::time::Instant::now() > deadline {
            return usage;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Loop devices attached now (their backing files).
fn loop_devices() -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .collect()
}

/// One test at a time: a test's `mkfs`/`mount` children sit in the test process's own
/// cgroup until its first runtime moves it to a leaf, and another test's runtime cannot
/// enable controllers there meanwhile (cgroup v2's no-internal-processes rule).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn limit_stops_dd(kind: Kind) {
    if !prerequisites() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let Some(fs) = QuotaFs::new(kind) else {
        return;
    };
    let rt = runtime_in(&fs.path(), |c| c.default_disk_bytes = Some(LIMIT));
    assert_eq!(rt.disk_limit_mode(), DiskLimitMode::ProjectQuota);
    let loops_before = loop_devices();
    rt.create_local(limited("full")).await.unwrap();
    rt.create_local(limited("neighbour")).await.unwrap();
    let disk = rt.sandbox_dir(&id("full")).join("disk");
    // No filesystem of its own: no mount under the sandbox's disk, no new loop device.
    assert!(
        !mounted_under(&rt.sandbox_dir(&id("full"))).contains(&disk.display().to_string()),
        "the disk is a plain directory"
    );
    assert_eq!(loop_devices(), loops_before);
    let project = quota::project_id(&disk).expect("the disk has a project");
    let (limit, inodes, _, _) = quota::project_usage(&disk, project).unwrap();
    assert_eq!(limit, LIMIT);
    assert!(inodes > 0);

    let (_, df) = sh_within(&rt, "full", "df -k / | tail -n 1", 60_000).await;
    let size_kib: u64 = df.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(size_kib, LIMIT / 1024, "df inside shows the limit: {df}");

    let free_before = free_bytes(&fs.path());
    let (_, out) = sh_within(
        &rt,
        "full",
        "dd if=/dev/zero of=/testbed/big bs=1M count=256 2>&1; echo rc=$?; sync; \
         stat -c %s /testbed/big",
        120_000,
    )
    .await;
    let expected = match kind {
        Kind::Xfs => "No space left on device",
        Kind::Ext4 => "Disk quota exceeded",
    };
    assert!(out.contains(expected), "{out}");
    assert!(!out.contains("rc=0"), "{out}");
    let size: u64 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(
        size > LIMIT * 8 / 10 && size <= LIMIT,
        "stopped at {} MiB",
        size / MIB
    );
    // Only this runtime writes to this filesystem: the drop is at most the limit (plus
    // metadata: a few blocks).
    let dropped = free_before.saturating_sub(free_bytes(&fs.path()));
    assert!(
        dropped <= LIMIT + MIB,
        "free space dropped {} KiB",
        dropped / 1024
    );
    let usage = rt.usage(&id("full")).await.unwrap();
    assert_eq!(usage.disk_limit_bytes, Some(LIMIT));
    let used = usage.disk_used_bytes.unwrap();
    assert!(used > LIMIT * 8 / 10 && used <= LIMIT, "usage {used}");

    // /tmp is on the writable layer: it shares the limit.
    let (_, out) = sh_within(
        &rt,
        "full",
        "dd if=/dev/zero of=/tmp/more bs=1M count=8 2>&1; echo rc=$?",
        60_000,
    )
    .await;
    assert!(out.contains(expected), "{out}");

    let (code, out) = sh_within(
        &rt,
        "neighbour",
        "echo fine > /testbed/f && cat /testbed/f",
        60_000,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "fine\n"));
    let (code, out) = sh_within(
        &rt,
        "full",
        "rm -f /testbed/big /tmp/more; echo again > /testbed/small && cat /testbed/small",
        60_000,
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "again\n"));

    // Destroyed: the project's limits are cleared and nothing is charged to it.
    let dir = rt.sandbox_dir(&id("full"));
    rt.destroy(&id("full")).await.unwrap();
    assert!(!dir.exists());
    assert_eq!(freed(&fs.path(), project).await, (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_quota_on_xfs_stops_dd_with_enospc_and_costs_the_host_at_most_the_limit() {
    limit_stops_dd(Kind::Xfs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_quota_on_ext4_stops_dd_and_costs_the_host_at_most_the_limit() {
    limit_stops_dd(Kind::Ext4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runtimes_projects_are_reclaimed_by_reconcile() {
    if !prerequisites() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let Some(fs) = QuotaFs::new(Kind::Xfs) else {
        return;
    };
    let survivor = runtime_in(&fs.path(), |c| c.default_disk_bytes = Some(LIMIT));
    let mut config = kiln_runtime::local::LocalConfig::new(survivor.root.path(), agent_binary());
    config.default_disk_bytes = Some(LIMIT);
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let crashed = kiln_runtime::local::LocalRuntime::new(config).unwrap();
    crashed.create_local(limited("orphan")).await.unwrap();
    crashed.create_local(limited("keep")).await.unwrap();
    let orphan_disk = crashed.sandbox_dir(&id("orphan")).join("disk");
    let keep_disk = crashed.sandbox_dir(&id("keep")).join("disk");
    let orphan = quota::project_id(&orphan_disk).unwrap();
    let keep = quota::project_id(&keep_disk).unwrap();
    assert_ne!(orphan, keep);
    let exec = |script: &'static str| kiln_protocol::ExecRequest::shell(script);
    let done = crashed
        .exec(
            &id("orphan"),
            exec("dd if=/dev/zero of=/root/x bs=1M count=4"),
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code, 0);
    assert!(quota::project_usage(&fs.path(), orphan).unwrap().2 >= 4 * MIB);
    drop(crashed);

    let report = survivor.reconcile(&[id("keep")]).await.unwrap();
    assert_eq!(report.removed, ["orphan"]);
    assert_eq!(
        freed(&fs.path(), orphan).await,
        (0, 0, 0, 0),
        "the orphan's project is free again"
    );
    assert_eq!(quota::project_usage(&fs.path(), keep).unwrap().0, LIMIT);
    let usage = survivor.usage(&id("keep")).await.unwrap();
    assert!(usage.disk_used_bytes.is_some());
    survivor.shutdown().await.unwrap();
    assert_eq!(freed(&fs.path(), keep).await, (0, 0, 0, 0));
}

/// Without project quotas on the runtime root's filesystem, `auto` falls back to loop
/// disks and an explicit `project_quota` refuses to start with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_project_quotas_auto_uses_loop_disks_and_project_quota_is_refused() {
    if !prerequisites() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let plain = tempfile::tempdir_in("/var/tmp").unwrap();
    if quota::problem(plain.path()).is_none() {
        eprintln!("SKIPPED: /var/tmp has project quotas");
        return;
    }
    let rt = runtime_with(|c| c.default_disk_bytes = Some(LIMIT));
    assert_eq!(rt.disk_limit_mode(), DiskLimitMode::LoopDisk);
    let mut config = kiln_runtime::local::LocalConfig::new(plain.path(), agent_binary());
    config.disk_limit_mode = DiskLimitMode::ProjectQuota;
    let err = kiln_runtime::local::LocalRuntime::new(config).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::HostNotReady(m) if m.contains("project_quota")),
        "{err}"
    );
}

/// `none`: the limit is not enforced (no disk, no project) and no limit is reported,
/// while admission still counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_disk_limit_mode_none_nothing_is_enforced_but_admission_counts() {
    if !prerequisites() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rt = runtime_with(|c| {
        c.default_disk_bytes = Some(LIMIT);
        c.disk_limit_mode = DiskLimitMode::None;
    });
    assert_eq!(rt.disk_limit_mode(), DiskLimitMode::None);
    let loops_before = loop_devices();
    rt.create_local(limited("free")).await.unwrap();
    let disk = rt.sandbox_dir(&id("free")).join("disk");
    assert!(!disk.join("../disk.img").exists());
    assert_eq!(quota::project_id(&disk), None);
    assert_eq!(loop_devices(), loops_before);
    let usage = rt.usage(&id("free")).await.unwrap();
    assert_eq!(
        (usage.disk_limit_bytes, usage.disk_used_bytes),
        (None, None)
    );
    assert_eq!(rt.limits_held().1, LIMIT);
    rt.destroy(&id("free")).await.unwrap();
}

/// Numbers for the record (not an assertion): create → ready without a disk limit, with
/// a loop disk (from the pool) and with a project quota, alternating on the same XFS
/// (`prjquota`) in one run. `cargo test -p kiln-runtime --test disk_quota -- --ignored
/// --nocapture create_time` (`KILN_BENCH_CREATES`, default 50 rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn create_time_without_a_limit_with_a_loop_disk_and_with_a_project_quota() {
    if !prerequisites() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let Some(fs) = QuotaFs::new(Kind::Xfs) else {
        return;
    };
    let n: usize = std::env::var("KILN_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let quota_rt = runtime_in(&fs.path(), |c| c.default_disk_bytes = Some(LIMIT));
    assert_eq!(quota_rt.disk_limit_mode(), DiskLimitMode::ProjectQuota);
    let loop_rt = runtime_in(&fs.path(), |c| {
        c.default_disk_bytes = Some(LIMIT);
        c.disk_limit_mode = DiskLimitMode::LoopDisk;
    });
    loop_rt.reconcile(&[]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut samples: [Vec<std::time::Duration>; 3] = Default::default();
    for i in 0..n {
        for (k, (rt, with_limit)) in [(&quota_rt, false), (&loop_rt, true), (&quota_rt, true)]
            .into_iter()
            .enumerate()
        {
            let mut spec = limited(&format!("c{i}-{k}"));
            if !with_limit {
                spec.limits.disk_bytes = None;
            }
            let sid = spec.id.clone();
            let t = std::time::Instant::now();
            rt.create_local(spec).await.unwrap();
            samples[k].push(t.elapsed());
            rt.destroy(&sid).await.unwrap();
        }
        // The pool refills between rounds, as between real creates.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (name, mut s) in ["no disk limit", "loop disk", "project quota"]
        .into_iter()
        .zip(samples)
    {
        s.sort();
        let at = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize];
        println!(
            "create -> ready {name:<14} n={} p50 {:.2?} p90 {:.2?} max {:.2?}",
            s.len(),
            at(0.5),
            at(0.9),
            s[s.len() - 1]
        );
    }
}
