//! The Docker backend's disk limit and admission against a real engine
//! (`scripts/start-dockerd.sh`; `KILN_DOCKERD_XFS=1` puts its data root on an XFS with
//! `prjquota`, where the kernel has XFS quotas; `scripts/cgroup2-vm.sh` runs it so, with
//! `KILN_TEST_EXPECT_DOCKER_DISK_LIMIT=required`). Skipped, saying why, without an engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod docker_support;

use std::time::Duration;

use docker_support::{ensure_busybox, host, BUSYBOX};
use kiln_protocol::ExecRequest;
use kiln_runtime::docker::{DiskLimitSupport, DockerRuntime, DockerSettings};
use kiln_runtime::{Limits, Resource, Runtime, RuntimeError, SandboxId, SandboxSpec};

const MIB: u64 = 1 << 20;

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

fn runtime(host: &str, prefix: &str, root: &std::path::Path, budget: u64) -> DockerRuntime {
    let mut settings = DockerSettings::new(kiln_test_support::agent_binary(), root);
    settings.host = Some(host.to_string());
    settings.label_prefix = prefix.to_string();
    settings.start_timeout = Duration::from_secs(20);
    settings.memory_budget = Some(budget);
    settings.memory_overcommit = 2.0;
    DockerRuntime::new(settings).expect("docker runtime")
}

fn spec(name: &str, memory: u64, disk: Option<u64>) -> SandboxSpec {
    let mut spec = SandboxSpec::image(id(name), BUSYBOX);
    spec.limits = Limits {
        memory_bytes: Some(memory),
        disk_bytes: disk,
        pids: Some(64),
        cpu_millicores: None,
    };
    spec
}

/// With a 512 MiB budget and a 2× ratio, the third 512 MiB container is refused before
/// the engine is asked, a reservation counts, and a destroy gives the room back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_a_container_past_the_budget_times_the_ratio() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-admit", root.path(), 512 * MIB);
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    rt.create(spec("admit-1", 512 * MIB, None)).await.unwrap();
    rt.reserve(&id("admit-2"), &spec("admit-2", 512 * MIB, None).limits)
        .unwrap();
    let err = rt
        .create(spec("admit-3", 512 * MIB, None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Capacity {
                resource: Resource::Memory,
                ..
            }
        ),
        "{err}"
    );
    let capacity = rt.capacity().await.unwrap();
    assert_eq!(capacity.memory_reserved_bytes, 1024 * MIB);
    assert_eq!(capacity.memory_budget_bytes, 512 * MIB);
    rt.release(&id("admit-2"));
    rt.destroy(&id("admit-1")).await.unwrap();
    assert_eq!(rt.capacity().await.unwrap().memory_reserved_bytes, 0);
    rt.create(spec("admit-3", 512 * MIB, None)).await.unwrap();
    rt.destroy(&id("admit-3")).await.unwrap();
    rt.shutdown().await.unwrap();
}

/// Where the engine's storage can limit a container's disk, `dd` past the limit fails
/// with `ENOSPC`; where it cannot, the create still succeeds, the limit is reported
/// unsupported (host report and `disk_limit_support`) and never asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_limit_stops_dd_with_enospc_or_is_reported_unsupported() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-disk", root.path(), 4096 * MIB);
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    let sid = id("disk-1");
    rt.create(spec("disk-1", 256 * MIB, Some(64 * MIB)))
        .await
        .unwrap();
    let (support, why) = rt.disk_limit_support();
    let report = rt.health().await;
    let line = report
        .checks
        .iter()
        .find(|c| c.name == "disk limits")
        .expect("a disk limits line");
    match support {
        DiskLimitSupport::Supported => {
            let done = rt
                .exec(
                    &sid,
                    ExecRequest::shell(
                        "dd if=/dev/zero of=/testbed/big bs=1M count=256 2>&1; echo rc=$?",
                    ),
                )
                .await
                .unwrap();
            let out = done.stdout.to_string_lossy();
            assert!(out.contains("No space left on device"), "{out}");
            assert!(!out.contains("rc=0"), "{out}");
            let usage = rt.usage(&sid).await.unwrap();
            assert_eq!(usage.disk_limit_bytes, Some(64 * MIB));
            // What was written up to the limit shows as the session's disk use.
            let used = usage.disk_used_bytes.unwrap();
            assert!((32 * MIB..=65 * MIB).contains(&used), "{used}");
            assert!(line.detail.contains("enforced"), "{}", line.detail);
        }
        DiskLimitSupport::Unsupported => {
            // The cgroup v2 VM's engine has an XFS data root with project quotas.
            if std::env::var("KILN_TEST_EXPECT_DOCKER_DISK_LIMIT").as_deref() == Ok("required") {
                panic!("KILN_TEST_EXPECT_DOCKER_DISK_LIMIT=required but {why}");
            }
            eprintln!("the engine cannot limit disks here: {why}");
            assert!(line.detail.starts_with("unsupported"), "{}", line.detail);
            assert_eq!(rt.usage(&sid).await.unwrap().disk_limit_bytes, None);
            // Later creates do not ask again (and still start).
            rt.create(spec("disk-2", 256 * MIB, Some(64 * MIB)))
                .await
                .unwrap();
            rt.destroy(&id("disk-2")).await.unwrap();
        }
        DiskLimitSupport::Unknown => panic!("a limited create settles the disk support"),
    }
    rt.destroy(&sid).await.unwrap();
    rt.shutdown().await.unwrap();
}
