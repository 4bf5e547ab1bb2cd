//! The Docker backend against a real engine (`scripts/start-dockerd.sh`): create → ready
//! → exec → files → destroy, isolation, a container that dies, reconciliation, TCP agents,
//! clear errors. Skipped, saying why, where dockerd cannot start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod docker_support;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::KillContainerOptions;
use docker_support::{ensure_busybox, host, runtime, BUSYBOX};
use kiln_protocol::{ExecRequest, WriteFileRequest};
use kiln_runtime::{Limits, Runtime, RuntimeError, SandboxExit, SandboxId, SandboxSpec, Workspace};

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

async fn sh(rt: &dyn Runtime, id: &SandboxId, cmd: &str) -> (i32, String) {
    let done = rt.exec(id, ExecRequest::shell(cmd)).await.unwrap();
    (
        done.exit_code,
        String::from_utf8_lossy(done.stdout.as_bytes()).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_sandbox_runs_commands_and_files_and_goes_away() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-life", root.path());
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    std::fs::write(workspace.path().join("in.txt"), "from the host\n").unwrap();
    let sid = id("life-1");
    let mut spec = SandboxSpec::image(sid.clone(), BUSYBOX);
    spec.limits = Limits {
        memory_bytes: Some(256 << 20),
        disk_bytes: None,
        pids: Some(64),
        cpu_millicores: Some(500),
    };
    spec.env.insert("GREETING".into(), "hi".into());
    spec.workspace = Some(Workspace {
        dir: workspace.path().to_path_buf(),
        target: "/work".into(),
    });
    let handle = rt.create(spec).await.unwrap();
    assert!(!handle.agent_version.is_empty());

    let (code, out) = sh(&rt, &sid, "echo $GREETING; cat /testbed/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hi\nhello from the image\n"));
    // Isolation: no network but loopback, no capabilities, the limits in force.
    let (_, out) = sh(&rt, &sid, "ls /sys/class/net").await;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let (_, out) = sh(&rt, &sid, "grep CapEff /proc/self/status").await;
    assert!(out.contains("0000000000000000"), "{out}");
    let (_, out) = sh(&rt, &sid, "grep NoNewPrivs /proc/self/status").await;
    assert!(out.contains('1'), "{out}");
    // Files through the agent, and the workspace both ways.
    rt.write_file(
        &sid,
        WriteFileRequest {
            path: "/work/out.txt".into(),
            content: "from the sandbox\n".into(),
            mode: None,
            create_parents: false,
        },
    )
    .await
    .unwrap();
    let read = rt.read_file(&sid, "/work/in.txt", None).await.unwrap();
    assert_eq!(read.content.as_bytes(), b"from the host\n");
    let listing = rt.list_dir(&sid, "/testbed").await.unwrap();
    assert!(listing.entries.iter().any(|e| e.name == "hello.txt"));
    rt.stat(&sid, "/testbed/hello.txt").await.unwrap();
    let before = rt.usage(&sid).await.unwrap();
    assert!(before.pids.is_some(), "{before:?}");
    // Disk use is the writable layer's, from the engine: 3 MiB more after writing 3 MiB.
    let (code, _) = sh(&rt, &sid, "dd if=/dev/zero of=/testbed/fill bs=1M count=3").await;
    assert_eq!(code, 0);
    let after = rt.usage(&sid).await.unwrap();
    let (before, after) = (before.disk_used_bytes, after.disk_used_bytes.unwrap());
    assert!(after >= before.unwrap() + (3 << 20), "{before:?} → {after}");
    assert_eq!(rt.list().await.unwrap().len(), 1);

    rt.destroy(&sid).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(workspace.path().join("out.txt")).unwrap(),
        "from the sandbox\n"
    );
    let gone = rt
        .engine()
        .inspect_container("kilntest-life-life-1", None)
        .await;
    assert!(gone.is_err(), "the container is still there");
    assert!(matches!(
        rt.exec(&sid, ExecRequest::shell("true")).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_image_is_loaded_into_the_engine_and_a_missing_one_is_named() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-img", root.path());
    ensure_busybox(&rt).await;
    let err = rt
        .create(SandboxSpec::image(id("img-1"), "kiln-test/nothing:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
    assert!(matches!(
        rt.check_image("kiln-test/nothing:1").await,
        Err(RuntimeError::ImageNotFound { .. })
    ));
    rt.check_image(BUSYBOX).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_reported_dead() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-dead", root.path());
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    let sid = id("dead-1");
    rt.create(SandboxSpec::image(sid.clone(), BUSYBOX))
        .await
        .unwrap();
    let kill = KillContainerOptions {
        signal: "SIGKILL".into(),
    };
    rt.engine()
        .kill_container("kilntest-dead-dead-1", Some(kill))
        .await
        .unwrap();
    match rt.wait_exit(&sid).await.unwrap() {
        SandboxExit::Died { reason } => assert!(reason.contains("137"), "{reason}"),
        other => panic!("{other:?}"),
    }
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_adopts_known_containers_and_removes_the_rest() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let first = runtime(&host, "kilntest-rec", root.path());
    ensure_busybox(&first).await;
    first.reconcile(&[]).await.unwrap();
    let (kept, orphan) = (id("rec-kept"), id("rec-orphan"));
    first
        .create(SandboxSpec::image(kept.clone(), BUSYBOX))
        .await
        .unwrap();
    first
        .create(SandboxSpec::image(orphan.clone(), BUSYBOX))
        .await
        .unwrap();
    drop(first); // a crash: nothing is torn down

    let second = runtime(&host, "kilntest-rec", root.path());
    let report = second.reconcile(std::slice::from_ref(&kept)).await.unwrap();
    assert_eq!(report.adopted, vec![kept.clone()]);
    assert_eq!(report.removed, vec!["kilntest-rec-rec-orphan".to_string()]);
    let (code, out) = sh(&second, &kept, "cat /testbed/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello from the image\n"));
    second.shutdown().await.unwrap();
    let left = second.reconcile(&[]).await.unwrap();
    assert!(left.removed.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_tcp_answers_only_with_its_secret() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let probe = runtime(&host, "kilntest-tcp", root.path());
    ensure_busybox(&probe).await;
    // An internal network: the host reaches the containers, they reach nothing beyond.
    let network = "kilntest-agents";
    if probe.engine().inspect_network(network, None).await.is_err() {
        let create = NetworkCreateRequest {
            name: network.into(),
            internal: Some(true),
            ..Default::default()
        };
        if let Err(err) = probe.engine().create_network(create).await {
            eprintln!("SKIPPED: this engine cannot make a network for TCP agents: {err}");
            return;
        }
    }
    let mut settings =
        kiln_runtime::docker::DockerSettings::new(kiln_test_support::agent_binary(), root.path());
    settings.host = Some(host.clone());
    settings.label_prefix = "kilntest-tcp".into();
    settings.connection = kiln_config::AgentConnection::Tcp;
    settings.network = Some(network.into());
    let rt = kiln_runtime::docker::DockerRuntime::new(settings).unwrap();
    rt.reconcile(&[]).await.unwrap();
    let sid = id("tcp-1");
    rt.create(SandboxSpec::image(sid.clone(), BUSYBOX))
        .await
        .unwrap();
    let (code, out) = sh(&rt, &sid, "cat /testbed/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello from the image\n"));
    // The same agent without the secret: refused before anything else.
    let inspect = rt
        .engine()
        .inspect_container("kilntest-tcp-tcp-1", None)
        .await
        .unwrap();
    let ip = inspect.network_settings.unwrap().networks.unwrap()[network]
        .ip_address
        .clone()
        .unwrap();
    let addr = std::net::SocketAddr::new(ip.parse().unwrap(), 7171);
    for secret in [None, Some("wrong-secret-of-enough-length".to_string())] {
        let err = kiln_protocol::AsyncAgentClient::tcp(addr, secret)
            .ping()
            .await
            .unwrap_err();
        let code = err.agent_error().map(|e| e.code.clone());
        assert_eq!(
            code,
            Some(kiln_protocol::ErrorCode::PermissionDenied),
            "{err}"
        );
    }
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test]
async fn an_engine_that_does_not_answer_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let mut settings =
        kiln_runtime::docker::DockerSettings::new(kiln_test_support::agent_binary(), root.path());
    // A socket file nobody listens on.
    let sock = root.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    settings.host = Some(format!("unix://{}", sock.display()));
    let rt = kiln_runtime::docker::DockerRuntime::new(settings).unwrap();
    let err = rt
        .create(SandboxSpec::image(id("down-1"), BUSYBOX))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::HostNotReady(_)), "{err}");
    assert!(err.to_string().contains("does not answer"), "{err}");
    assert!(!rt.health().await.is_ready());
}

/// A demo environment image (Debian with Python) from Kiln's image store: loaded into the
/// engine on first use, then found by its config digest. Skipped without the demo images
/// (`kiln images build-demo`, see scripts/test.sh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_image_from_the_store_is_loaded_and_runs_its_tests() {
    let Some(host) = host() else { return };
    let dir = std::env::var("KILN_TEST_IMAGES_DIR")
        .unwrap_or_else(|_| "/var/cache/kiln-test/images".into());
    let reference = "kiln-demo/sample/kiln-demo__inifile-1:1";
    let Ok(store) = kiln_image::ImageStore::open(std::path::Path::new(&dir)) else {
        eprintln!("SKIPPED: no demo images in {dir}");
        return;
    };
    let Ok(image) = store.get(reference) else {
        eprintln!("SKIPPED: no {reference} in {dir}");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-demo", root.path()).with_images(store);
    rt.reconcile(&[]).await.unwrap();
    rt.check_image(reference).await.unwrap();
    let sid = id("demo-1");
    rt.create(SandboxSpec::image(sid.clone(), reference))
        .await
        .unwrap();
    // The engine holds it under the config digest: its own id.
    let loaded = rt
        .engine()
        .inspect_image(&image.config_digest().to_string())
        .await
        .unwrap();
    assert_eq!(
        loaded.id.as_deref(),
        Some(image.config_digest().to_string().as_str())
    );
    let (code, out) = sh(&rt, &sid, "pwd; python3 -c 'print(6*7)'").await;
    assert_eq!((code, out.as_str()), (0, "/testbed\n42\n"), "{out}");
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_a_commit_and_forks_start_from_it() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-snap", root.path());
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    let (parent, child) = (id("snap-parent"), id("snap-child"));
    rt.create(SandboxSpec::image(parent.clone(), BUSYBOX))
        .await
        .unwrap();
    sh(
        &rt,
        &parent,
        "echo 'before the snapshot' > /testbed/state.txt",
    )
    .await;
    let snapshot = rt.snapshot(&parent).await.unwrap();
    assert_eq!(snapshot.sandbox, parent);
    assert!(snapshot.size_bytes > 0, "{snapshot:?}");
    // Listed (what start-up compares with the store), until removed below.
    assert_eq!(
        rt.list_snapshots().await.unwrap(),
        std::slice::from_ref(&snapshot.id)
    );
    sh(&rt, &parent, "echo 'after' > /testbed/state.txt").await;
    rt.create(SandboxSpec::fork(child.clone(), &snapshot))
        .await
        .unwrap();
    let (code, out) = sh(&rt, &child, "cat /testbed/state.txt; pwd").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "before the snapshot\n/testbed\n"),
        "{out}"
    );
    // In use by a fork: not removable; once the fork is gone, removed.
    assert!(rt.remove_snapshot(&snapshot.id).await.is_err());
    rt.destroy(&child).await.unwrap();
    rt.remove_snapshot(&snapshot.id).await.unwrap();
    assert!(matches!(
        rt.remove_snapshot(&snapshot.id).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(rt.list_snapshots().await.unwrap().is_empty());
    rt.destroy(&parent).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_process_limits_hold_and_the_sandbox_survives_them() {
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let rt = runtime(&host, "kilntest-lim", root.path());
    ensure_busybox(&rt).await;
    rt.reconcile(&[]).await.unwrap();
    let sid = id("lim-1");
    let mut spec = SandboxSpec::image(sid.clone(), BUSYBOX);
    spec.limits = Limits {
        memory_bytes: Some(64 << 20),
        disk_bytes: None,
        pids: Some(32),
        cpu_millicores: Some(1000),
    };
    rt.create(spec).await.unwrap();
    // A memory hog is killed (no swap to hide in); the agent, small, is not.
    let (code, _) = sh(
        &rt,
        &sid,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}",
    )
    .await;
    assert_ne!(code, 0, "a 200 MB string fit in 64 MiB");
    // A fork bomb stops at the pids limit (`kill -1` spares the agent, PID 1).
    let bomb = ExecRequest::shell("for i in $(seq 60); do sleep 30 & done; kill -9 -1");
    let done = rt.exec(&sid, bomb).await.unwrap();
    let stderr = String::from_utf8_lossy(done.stderr.as_bytes()).into_owned();
    assert!(
        stderr.contains("fork"),
        "60 processes under a limit of 32: {stderr:?}"
    );
    let (code, out) = sh(&rt, &sid, "echo still here").await;
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    rt.destroy(&sid).await.unwrap();
}

/// Answers every connection with one fixed line, counting them.
#[derive(Default)]
struct Greeter {
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl kiln_runtime::EgressHandler for Greeter {
    fn serve(
        &self,
        mut stream: kiln_runtime::EgressStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        use tokio::io::AsyncWriteExt;
        let served = std::sync::Arc::clone(&self.served);
        Box::pin(async move {
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(b"through the server\n").await;
            let _ = stream.shutdown().await;
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_reaches_its_egress_handler_also_after_adoption() {
    use std::sync::atomic::Ordering;
    let Some(host) = host() else { return };
    let root = tempfile::tempdir().unwrap();
    let first = runtime(&host, "kilntest-egress", root.path());
    ensure_busybox(&first).await;
    first.reconcile(&[]).await.unwrap();
    let (with, without) = (id("egress-on"), id("egress-off"));
    let greeter = Greeter::default();
    let served = std::sync::Arc::clone(&greeter.served);
    let mut spec = SandboxSpec::image(with.clone(), BUSYBOX);
    spec.egress = Some(kiln_runtime::Egress(std::sync::Arc::new(greeter)));
    first.create(spec).await.unwrap();
    first
        .create(SandboxSpec::image(without.clone(), BUSYBOX))
        .await
        .unwrap();
    let (host_part, port) = kiln_runtime::EGRESS_PROXY_ADDR.split_once(':').unwrap();
    let ask = format!("nc {host_part} {port} </dev/null");
    let (_, out) = sh(&first, &with, &ask).await;
    assert_eq!(out, "through the server\n");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // Without an egress nothing listens there, and the container has no other way out.
    let (_, out) = sh(&first, &without, &ask).await;
    assert_eq!(out, "");
    drop(first); // a crash: the container and its agent's relay stay

    let second = runtime(&host, "kilntest-egress", root.path());
    let report = second.reconcile(std::slice::from_ref(&with)).await.unwrap();
    assert_eq!(report.adopted, vec![with.clone()]);
    let (_, out) = sh(&second, &with, &ask).await;
    assert_eq!(out, "", "the old server's handler is gone");
    let greeter = Greeter::default();
    let served = std::sync::Arc::clone(&greeter.served);
    second
        .attach_egress(&with, kiln_runtime::Egress(std::sync::Arc::new(greeter)))
        .await
        .unwrap();
    let (_, out) = sh(&second, &with, &ask).await;
    assert_eq!(out, "through the server\n");
    assert_eq!(served.load(Ordering::SeqCst), 1);
    second.shutdown().await.unwrap();
}
