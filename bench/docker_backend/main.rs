//! The Docker backend against the local backend, in the same run on the same busybox
//! root: create → ready (the agent answered) and an exec round trip (`true`), through the
//! same `Runtime` trait the server uses. Medians and the docker/local ratio.
//!
//!     cargo bench -p kiln-runtime --bench docker_backend
//!
//! Root; starts the private engine of `scripts/start-dockerd.sh` (skips when it cannot).
//! Environment: `KILN_BENCH_CREATES` (default 20), `KILN_BENCH_EXECS` (default 200),
//! `KILN_AGENT_BIN`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use kiln_protocol::ExecRequest;
use kiln_runtime::docker::{DockerRuntime, DockerSettings};
use kiln_runtime::local::{LocalConfig, LocalRuntime, LocalSpec, RootLayers};
use kiln_runtime::{Runtime, SandboxId, SandboxSpec};

const ROOTFS: &str = "/var/cache/kiln-test/busybox-rootfs-docker-bench";
const IMAGE: &str = "kiln-bench/busybox:1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ensure_rootfs() {
    if Path::new(ROOTFS).join("bin/sh").exists() {
        return;
    }
    let tmp = format!("{ROOTFS}.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for dir in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
        std::fs::create_dir_all(Path::new(&tmp).join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", Path::new(&tmp).join("bin/busybox"))
        .expect("apt-get install busybox-static");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", Path::new(&tmp).join("bin").join(applet)).unwrap();
    }
    std::fs::rename(&tmp, ROOTFS).unwrap();
}

async fn import_image(rt: &DockerRuntime) {
    rt.negotiate().await.unwrap();
    if rt.engine().inspect_image(IMAGE).await.is_ok() {
        return;
    }
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", ROOTFS).unwrap();
    let body = tar.into_inner().unwrap();
    let (repo, tag) = IMAGE.split_once(':').unwrap();
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut progress =
        rt.engine()
            .create_image(Some(options), Some(bollard::body_full(body.into())), None);
    while let Some(step) = progress.next().await {
        step.unwrap();
    }
}

/// (create → ready samples, exec round-trip samples) for one backend.
async fn measure(
    name: &str,
    rt: &dyn Runtime,
    spec: impl Fn(SandboxId) -> SandboxSpec,
    create: impl AsyncCreate,
) -> (Duration, Duration) {
    let (creates, execs) = (
        env_usize("KILN_BENCH_CREATES", 20),
        env_usize("KILN_BENCH_EXECS", 200),
    );
    let mut ready = Vec::new();
    for i in 0..creates {
        let id = SandboxId::new(format!("bench-{i}")).unwrap();
        let start = Instant::now();
        create.create(rt, spec(id.clone())).await;
        ready.push(start.elapsed());
        if i + 1 < creates {
            rt.destroy(&id).await.unwrap();
        }
    }
    let last = SandboxId::new(format!("bench-{}", creates - 1)).unwrap();
    let mut round_trips = Vec::new();
    for _ in 0..execs {
        let start = Instant::now();
        let done = rt.exec(&last, ExecRequest::shell("true")).await.unwrap();
        round_trips.push(start.elapsed());
        assert_eq!(done.exit_code, 0);
    }
    rt.destroy(&last).await.unwrap();
    let (ready, exec) = (median(ready), median(round_trips));
    println!("{name:<8} create -> ready p50 {ready:>9.2?}   exec `true` p50 {exec:>9.2?}");
    (ready, exec)
}

/// How a backend's sandbox is created from a spec (the local one takes a directory).
#[async_trait::async_trait]
trait AsyncCreate {
    async fn create(&self, rt: &dyn Runtime, spec: SandboxSpec);
}

struct ThroughTrait;

#[async_trait::async_trait]
impl AsyncCreate for ThroughTrait {
    async fn create(&self, rt: &dyn Runtime, spec: SandboxSpec) {
        rt.create(spec).await.unwrap();
    }
}

struct Local<'a>(&'a LocalRuntime);

#[async_trait::async_trait]
impl AsyncCreate for Local<'_> {
    async fn create(&self, _rt: &dyn Runtime, spec: SandboxSpec) {
        let mut local = LocalSpec::new(spec.id, RootLayers::single(ROOTFS));
        local.limits.disk_bytes = None;
        self.0.create_local(local).await.unwrap();
    }
}

#[tokio::main]
async fn main() {
    let Some(host) = kiln_test_support::docker::docker_host() else {
        return;
    };
    ensure_rootfs();
    let agent = kiln_test_support::agent_binary();
    let root = tempfile::tempdir().unwrap();

    let mut config = LocalConfig::new(root.path().join("local"), &agent);
    config.default_disk_bytes = None;
    config.disk_pool = 0;
    let local = LocalRuntime::new(config).unwrap();
    local.reconcile(&[]).await.unwrap();

    let mut settings = DockerSettings::new(&agent, root.path().join("docker"));
    settings.host = Some(host);
    settings.label_prefix = "kilnbench".into();
    let docker = DockerRuntime::new(settings).unwrap();
    import_image(&docker).await;
    docker.reconcile(&[]).await.unwrap();

    let unused = |id| SandboxSpec::image(id, ROOTFS);
    let (local_ready, local_exec) = measure("local", &local, unused, Local(&local)).await;
    let image = |id| {
        let mut spec = SandboxSpec::image(id, IMAGE);
        spec.limits.disk_bytes = None;
        spec
    };
    let (docker_ready, docker_exec) = measure("docker", &docker, image, ThroughTrait).await;
    let ratio = |d: Duration, l: Duration| d.as_secs_f64() / l.as_secs_f64().max(1e-9);
    println!("--- docker / local (above 1: the Docker backend is slower) ---");
    println!(
        "create -> ready   {:>7.2}",
        ratio(docker_ready, local_ready)
    );
    println!("exec `true`       {:>7.2}", ratio(docker_exec, local_exec));
    local.shutdown().await.unwrap();
    docker.shutdown().await.unwrap();
}
