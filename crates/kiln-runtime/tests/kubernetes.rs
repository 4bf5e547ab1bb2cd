//! The Kubernetes backend against the in-repo test API server and its test kubelet
//! (`kiln-kube-test`): create → ready (from the watch) → exec → files → destroy with the
//! real agent injected and reached over TCP; Pods that cannot start fail at once and
//! clearly; broken and expired watches, throttling and server errors are survived;
//! reconciliation by label. The last test runs against a real cluster when
//! `KILN_TEST_KUBECONFIG` is set (and fails without one when `KILN_REQUIRE_K8S=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kiln_kube_test::{ClusterOptions, TestCluster};
use kiln_protocol::{ExecRequest, WriteFileRequest};
use kiln_runtime::kubernetes::{network_policy, pod_name, KubeRuntime, KubeSettings, WARM_LABEL};
use kiln_runtime::{
    Egress, EgressHandler, EgressStream, Limits, Runtime, RuntimeError, SandboxExit, SandboxId,
    SandboxSpec,
};

const AGENT_IMAGE: &str = "kiln/agent:test";
const NS: &str = "sandboxes";

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

async fn cluster(missing: &[&str]) -> TestCluster {
    cluster_with(missing, Duration::ZERO).await
}

async fn cluster_with(missing: &[&str], start_delay: Duration) -> TestCluster {
    let mut options = ClusterOptions::new(kiln_test_support::agent_binary(), AGENT_IMAGE);
    options.missing_images = missing.iter().map(|s| s.to_string()).collect();
    options.node_memory_bytes = 4 << 30;
    options.bookmark_interval = Duration::from_millis(50);
    options.start_delay = start_delay;
    TestCluster::start(options).await.unwrap()
}

fn runtime(cluster: &TestCluster, node: &str) -> KubeRuntime {
    let mut settings = KubeSettings::new(node);
    settings.kubeconfig = Some(cluster.kubeconfig());
    settings.namespace = NS.into();
    settings.agent_image = AGENT_IMAGE.into();
    settings.agent_port = 7171;
    // Far above what any case here needs: a failure must come from the Pod's status,
    // not from this running out.
    settings.ready_timeout = Duration::from_secs(30);
    KubeRuntime::new(settings)
}

fn spec(sid: &SandboxId, image: &str) -> SandboxSpec {
    let mut spec = SandboxSpec::image(sid.clone(), image);
    spec.limits = Limits {
        memory_bytes: Some(256 << 20),
        disk_bytes: Some(1 << 30),
        pids: Some(64),
        cpu_millicores: Some(500),
    };
    spec
}

async fn sh(rt: &dyn Runtime, id: &SandboxId, cmd: &str) -> (i32, String) {
    let done = rt.exec(id, ExecRequest::shell(cmd)).await.unwrap();
    (
        done.exit_code,
        String::from_utf8_lossy(done.stdout.as_bytes()).into_owned(),
    )
}

fn count(cluster: &TestCluster, pattern: &str) -> usize {
    cluster
        .requests()
        .iter()
        .filter(|r| r.contains(pattern))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_sandbox_runs_commands_and_files_and_goes_away() {
    let cluster = cluster(&[]).await;
    let rt = runtime(&cluster, "node-a");
    let sid = id("Life_1");
    let mut spec = spec(&sid, "python:3.12");
    spec.env.insert("GREETING".into(), "hi".into());
    let handle = rt.create(spec).await.unwrap();
    assert!(!handle.agent_version.is_empty());

    let name = pod_name(&sid);
    let pods = cluster.pods();
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].metadata.name.as_deref(), Some(name.as_str()));
    let policies = cluster.network_policies();
    assert_eq!(policies[0].metadata.name.as_deref(), Some(name.as_str()));
    // The agent's secret is in a Secret of the same name, not in the Pod spec.
    assert_eq!(
        cluster.secrets()[0].metadata.name.as_deref(),
        Some(name.as_str())
    );
    // The Pod as the API server got it: the disk limit and the agent's protection.
    let pod = serde_json::to_value(&pods[0]).unwrap();
    let pod_spec = &pod["spec"];
    assert_eq!(pod_spec["automountServiceAccountToken"], false);
    assert_eq!(pod_spec["shareProcessNamespace"], false);
    for host in ["hostPID", "hostIPC", "hostNetwork"] {
        assert_eq!(pod_spec[host], false, "{host}");
    }
    let main = &pod_spec["containers"][0];
    for amounts in ["limits", "requests"] {
        assert_eq!(
            main["resources"][amounts]["ephemeral-storage"],
            (1u64 << 30).to_string()
        );
    }
    assert_eq!(main["volumeMounts"][0]["mountPath"], "/.kiln");
    assert_eq!(main["volumeMounts"][0]["readOnly"], true);
    let init = &pod_spec["initContainers"][0];
    assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
    for container in [main, init] {
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(sc["procMount"], "Default");
    }
    let spec_json = serde_json::to_string(&pods[0].spec).unwrap();
    let secrets = cluster.secrets();
    let secret = &secrets[0].data.as_ref().unwrap()["agent-secret"].0;
    assert_eq!(secret.len(), 32);
    assert!(!spec_json.contains(std::str::from_utf8(secret).unwrap()));

    // Commands run through the injected agent, with the Pod's environment, and never
    // see the agent's secret.
    let (code, out) = sh(
        &rt,
        &sid,
        "echo $GREETING; echo ${KILN_AGENT_SECRET:-hidden}",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hi\nhidden\n"));
    let dir = cluster.pod_dir(NS, &name);
    let file = dir.join("notes.txt").to_string_lossy().into_owned();
    let written = rt
        .write_file(
            &sid,
            WriteFileRequest {
                path: file.clone(),
                content: "first line\n".into(),
                mode: None,
                create_parents: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(written, 11);
    let (_, out) = sh(&rt, &sid, &format!("cat {file}")).await;
    assert_eq!(out, "first line\n");
    let read = rt.read_file(&sid, &file, None).await.unwrap();
    assert_eq!(read.content.as_bytes(), b"first line\n");
    assert_eq!(rt.list().await.unwrap().len(), 1);

    rt.destroy(&sid).await.unwrap();
    assert!(cluster.pods().is_empty());
    assert!(cluster.network_policies().is_empty());
    assert!(cluster.secrets().is_empty());
    assert!(matches!(
        rt.exec(&sid, ExecRequest::shell("true")).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(
        rt.destroy(&sid).await,
        Err(RuntimeError::NotFound(_))
    ));
    // Readiness came from a watch, never from polling the Pod.
    assert_eq!(
        count(&cluster, &format!("GET /api/v1/namespaces/{NS}/pods/")),
        0
    );
    assert!(count(&cluster, "watch=true") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_cannot_start_fail_at_once_and_clearly() {
    let cluster = cluster(&["missing/image:1"]).await;
    let rt = runtime(&cluster, "node-a");

    let err = rt
        .create(spec(&id("pull"), "missing/image:1"))
        .await
        .unwrap_err();
    match &err {
        RuntimeError::ImageNotFound { reference, reason } => {
            assert_eq!(reference, "missing/image:1");
            assert!(
                reason.contains("ErrImagePull") || reason.contains("ImagePullBackOff"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut big = spec(&id("big"), "python:3.12");
    big.limits.memory_bytes = Some(64 << 30);
    let err = rt.create(big).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::StartFailed { reason, .. } if reason.contains("Unschedulable")),
        "{err}"
    );

    let mut wrong_agent = runtime(&cluster, "node-a").settings().clone();
    wrong_agent.agent_image = "kiln/not-the-agent:1".into();
    let rt2 = KubeRuntime::new(wrong_agent);
    let err = rt2
        .create(spec(&id("init"), "python:3.12"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::StartFailed { reason, .. } if reason.contains("installing the agent failed")),
        "{err}"
    );

    // Nothing is left behind, and the ids can be used again.
    assert!(cluster.pods().is_empty(), "{:?}", cluster.pods());
    assert!(cluster.network_policies().is_empty());
    assert!(rt.list().await.unwrap().is_empty());
    // Forks and workspaces answer the typed "this backend cannot".
    let snap = rt.snapshot(&id("pull")).await.unwrap_err();
    assert!(matches!(snap, RuntimeError::Unsupported { .. }), "{snap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_expired_watches_are_resumed_and_a_death_is_seen() {
    // The kubelet waits, so the backend's list sees the Pod Pending and its readiness
    // can only come through the watch.
    let cluster = cluster_with(&[], Duration::from_millis(300)).await;
    let rt = runtime(&cluster, "node-a");
    let sid = id("watched");
    // The first watches end after one event each (Running, then Ready): readiness still
    // arrives, by resuming.
    cluster.break_next_watches(2);
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    assert!(
        count(&cluster, "watch=true") >= 2,
        "{:#?}",
        cluster.requests()
    );

    // The server forgets its history and drops every watch: the resumed watch gets
    // 410 Gone, the backend lists again, and still sees the container die.
    let lists = count(&cluster, "fieldSelector=metadata.name");
    cluster.compact();
    cluster.end_watches();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster.kill_container(NS, &pod_name(&sid), "OOMKilled"));
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait_exit(&sid))
        .await
        .expect("the death is seen")
        .unwrap();
    match exit {
        SandboxExit::Died { reason } => assert!(reason.contains("lack of memory"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        count(&cluster, "fieldSelector=metadata.name") > lists,
        "no relist after 410"
    );
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let cluster = cluster(&[]).await;
    let rt = runtime(&cluster, "node-a");
    let sid = id("retried");
    cluster.fail_next(429, 2);
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    cluster.fail_next(500, 2);
    rt.destroy(&sid).await.unwrap();
    assert!(cluster.pods().is_empty());
    // A server that keeps failing fails the create, cleanly.
    cluster.fail_next(500, 1000);
    let err = rt.create(spec(&sid, "python:3.12")).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::StartFailed { reason, .. } if reason.contains("500")),
        "{err}"
    );
    cluster.fail_next(500, 0);
    assert!(rt.list().await.unwrap().is_empty());
    // A conflict is not retried: it is the caller's.
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    let other = runtime(&cluster, "node-a");
    let err = other.create(spec(&sid, "python:3.12")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists(_)), "{err}");
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_adopts_known_pods_and_removes_the_rest_of_its_node() {
    let cluster = cluster(&[]).await;
    let first = runtime(&cluster, "node-a");
    let neighbour = runtime(&cluster, "node-b");
    let (kept, dropped, theirs) = (id("kept"), id("dropped"), id("theirs"));
    first.create(spec(&kept, "python:3.12")).await.unwrap();
    first.create(spec(&dropped, "python:3.12")).await.unwrap();
    neighbour
        .create(spec(&theirs, "python:3.12"))
        .await
        .unwrap();

    // A crash between a NetworkPolicy's create and its Pod's left policies behind.
    let orphan = id("orphan");
    let a = runtime(&cluster, "node-a");
    cluster.insert_network_policy(NS, network_policy(a.settings(), &orphan, None));
    let b = runtime(&cluster, "node-b");
    cluster.insert_network_policy(NS, network_policy(b.settings(), &id("b-orphan"), None));

    // A restarted server of node-a: knows `kept` only.
    let restarted = runtime(&cluster, "node-a");
    let report = restarted
        .reconcile(std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert_eq!(report.adopted, vec![kept.clone()]);
    assert_eq!(report.removed, vec![pod_name(&dropped), pod_name(&orphan)]);
    let (_, out) = sh(&restarted, &kept, "echo adopted").await;
    assert_eq!(out, "adopted\n");
    let names: Vec<_> = cluster
        .pods()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        names.contains(&pod_name(&theirs)),
        "another node's Pod was touched"
    );
    assert!(!names.contains(&pod_name(&dropped)));
    let policies: Vec<_> = cluster
        .network_policies()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(!policies.contains(&pod_name(&orphan)));
    assert!(
        policies.contains(&pod_name(&id("b-orphan"))),
        "another node's policy was touched"
    );
    restarted.shutdown().await.unwrap();
    neighbour.shutdown().await.unwrap();
    assert!(cluster.pods().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pod_serves_a_create_of_its_image_and_is_refilled() {
    // A new Pod waits 500 ms for the kubelet: a warm one does not.
    let cluster = cluster_with(&[], Duration::from_millis(500)).await;
    let mut settings = runtime(&cluster, "node-a").settings().clone();
    settings.warm_pools = [("python:3.12".to_string(), 1)].into();
    let rt = KubeRuntime::new(settings);
    let sid = id("warmed");
    let class = rt.prepare(&spec(&sid, "python:3.12")).await.unwrap();
    let ready = |n: usize| {
        let rt = &rt;
        let class = &class;
        async move {
            for _ in 0..750 {
                if rt.warm_ready(class) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("no warm Pod");
        }
    };
    ready(1).await;
    let warm_pod = cluster.pods()[0].metadata.name.clone().unwrap();
    let started = std::time::Instant::now();
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "{took:?}");
    // The sandbox is the warm Pod, now named its own for reconciliation.
    let pod = cluster
        .pods()
        .into_iter()
        .find(|p| p.metadata.name.as_ref() == Some(&warm_pod))
        .unwrap();
    assert_eq!(
        pod.metadata.annotations.unwrap()["kiln.dev/sandbox-id"],
        "warmed"
    );
    assert!(!pod.metadata.labels.unwrap().contains_key(WARM_LABEL));
    let (_, out) = sh(&rt, &sid, "echo warm").await;
    assert_eq!(out, "warm\n");
    // The pool refills; a create with env of its own gets its own Pod.
    ready(1).await;
    assert_eq!(cluster.pods().len(), 2);
    let own = id("own");
    let mut with_env = spec(&own, "python:3.12");
    with_env.env.insert("A".into(), "b".into());
    rt.create(with_env).await.unwrap();
    assert!(cluster
        .pods()
        .iter()
        .any(|p| p.metadata.name == Some(pod_name(&own))));
    assert_eq!(rt.warm_ready(&class), 1);
    // This server's reconcile keeps its warm Pod; shutdown removes everything.
    let report = rt.reconcile(&[sid.clone(), own.clone()]).await.unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    rt.shutdown().await.unwrap();
    assert!(cluster.pods().is_empty(), "{:?}", cluster.pods());
    assert!(cluster.secrets().is_empty());
}

/// A real cluster (kind, k3s…): see README, "Kubernetes backend". Needs
/// `KILN_TEST_KUBECONFIG`, `KILN_TEST_K8S_AGENT_IMAGE` (an image with `/kiln-agent`), and
/// Pod IPs this machine can reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_cluster_runs_a_sandbox() {
    let Some(kubeconfig) = std::env::var_os("KILN_TEST_KUBECONFIG") else {
        assert!(
            std::env::var("KILN_REQUIRE_K8S").as_deref() != Ok("1"),
            "KILN_REQUIRE_K8S=1 but KILN_TEST_KUBECONFIG is not set"
        );
        eprintln!("skipped: set KILN_TEST_KUBECONFIG to run against a real cluster");
        return;
    };
    let mut settings = KubeSettings::new("kiln-test");
    settings.kubeconfig = Some(kubeconfig.into());
    settings.namespace =
        std::env::var("KILN_TEST_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
    settings.agent_image =
        std::env::var("KILN_TEST_K8S_AGENT_IMAGE").expect("KILN_TEST_K8S_AGENT_IMAGE");
    settings.ready_timeout = Duration::from_secs(120);
    let rt = KubeRuntime::new(settings);
    rt.reconcile(&[]).await.unwrap();
    let image = std::env::var("KILN_TEST_K8S_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
    let sid = id("real-1");
    rt.create(spec(&sid, &image)).await.unwrap();
    let (code, out) = sh(&rt, &sid, "echo hello from the cluster").await;
    assert_eq!((code, out.as_str()), (0, "hello from the cluster\n"));
    rt.destroy(&sid).await.unwrap();
    let mut missing = spec(&id("real-missing"), "kiln.invalid/missing:1");
    missing.limits.memory_bytes = Some(64 << 20);
    let err = rt.create(missing).await.unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_backend_opens_reports_health_and_runs() {
    let cluster = cluster(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = kiln_config::RuntimeConfig {
        backend: kiln_config::RuntimeBackend::Kubernetes,
        memory_mib: 512,
        ..Default::default()
    };
    config.kubernetes.kubeconfig = Some(cluster.kubeconfig());
    config.kubernetes.namespace = NS.into();
    config.kubernetes.agent_image = AGENT_IMAGE.into();
    config.kubernetes.node = Some("cfg-node".into());
    let opened = kiln_runtime::open(&config, dir.path(), &dir.path().join("images")).unwrap();
    assert_eq!(opened.location, "kubernetes:cfg-node/sandboxes");
    assert_eq!(opened.limits.memory_bytes, Some(512 << 20));
    let health = opened.runtime.health().await;
    assert!(health.is_ready(), "{health:?}");
    assert!(health.checks[0].detail.contains("v1.35.0"), "{health:?}");

    let sid = id("configured");
    let mut spec = SandboxSpec::image(sid.clone(), "python:3.12");
    spec.limits = opened.limits;
    opened.runtime.create(spec).await.unwrap();
    let (_, out) = sh(opened.runtime.as_ref(), &sid, "echo configured").await;
    assert_eq!(out, "configured\n");
    let pod = &cluster.pods()[0];
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["kiln.dev/node"],
        "cfg-node"
    );
    opened.runtime.shutdown().await.unwrap();
    assert!(cluster.pods().is_empty());

    // An unreachable cluster is a clear "not ready", not a hang or a panic.
    config.kubernetes.kubeconfig = Some(dir.path().join("missing-kubeconfig"));
    let opened = kiln_runtime::open(&config, dir.path(), &dir.path().join("images")).unwrap();
    let health = opened.runtime.health().await;
    assert!(!health.is_ready());
    let err = opened
        .runtime
        .create(SandboxSpec::image(id("nowhere"), "python:3.12"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::HostNotReady(m) if m.contains("kubeconfig")),
        "{err}"
    );
}

/// Answers a line with it reversed, counting the connections it got.
#[derive(Default)]
struct Reverser {
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EgressHandler for Reverser {
    fn serve(
        &self,
        stream: EgressStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let served = std::sync::Arc::clone(&self.served);
        Box::pin(async move {
            served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut stream = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            if stream.read_line(&mut line).await.is_ok() {
                let reversed: String = line.trim_end().chars().rev().collect();
                let _ = stream
                    .get_mut()
                    .write_all(format!("{reversed}\n").as_bytes())
                    .await;
                let _ = stream.get_mut().shutdown().await;
            }
        })
    }
}

/// A line to the sandbox's proxy address and what came back (bash's `/dev/tcp`: the
/// test kubelet runs the agent on this host, which has no `nc`).
async fn ask_proxy(rt: &dyn Runtime, sid: &SandboxId) -> String {
    let (host, port) = kiln_runtime::EGRESS_PROXY_ADDR.split_once(':').unwrap();
    let script =
        format!("exec 3<>/dev/tcp/{host}/{port} && echo kiln-egress >&3 && timeout 5 cat <&3");
    let done = rt
        .exec(
            sid,
            kiln_protocol::ExecRequest::argv(["bash", "-c", script.as_str()]),
        )
        .await
        .unwrap();
    String::from_utf8_lossy(done.stdout.as_bytes()).into_owned()
}

fn egress_runtime(cluster: &TestCluster, node: &str, listen: std::net::SocketAddr) -> KubeRuntime {
    let mut settings = runtime(cluster, node).settings().clone();
    settings.egress_listen = Some(listen);
    KubeRuntime::new(settings)
}

/// One test, not several: every sandbox's relay listens on this host's 127.0.0.1:3128.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_an_allowlist_reaches_its_handler_and_nothing_else() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = cluster(&[]).await;
    let sid = id("Egress_1");
    let with_egress = |handler: &Reverser| {
        let mut s = spec(&sid, "python:3.12");
        s.egress = Some(Egress(std::sync::Arc::new(Reverser {
            served: std::sync::Arc::clone(&handler.served),
        })));
        s
    };
    let first = Reverser::default();

    // Without `egress_listen`: refused as before, naming the setting; nothing made.
    let err = runtime(&cluster, "node-e")
        .create(with_egress(&first))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Unsupported { .. })
            && err.to_string().contains("egress_listen"),
        "{err}"
    );
    assert!(cluster.pods().is_empty());

    // A fixed port, so a restarted server listens where the Pod's relay dials.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rt = egress_runtime(&cluster, "node-e", listen);
    rt.create(with_egress(&first)).await.unwrap();
    let plain = id("plain_1");
    rt.create(spec(&plain, "python:3.12")).await.unwrap();
    assert_eq!(ask_proxy(&rt, &sid).await, "sserge-nlik\n");
    assert_eq!(first.served.load(Ordering::SeqCst), 1);

    // The policy lets it reach exactly the listener; the other keeps deny-all.
    let policy_of = |name: String| {
        let policy = cluster
            .network_policies()
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            .unwrap();
        serde_json::to_value(policy).unwrap()["spec"].clone()
    };
    assert_eq!(
        policy_of(pod_name(&sid))["egress"],
        serde_json::json!([{
            "to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
            "ports": [{"port": listen.port(), "protocol": "TCP"}],
        }])
    );
    assert_eq!(policy_of(pod_name(&plain))["egress"], serde_json::json!([]));
    // The secret that proves the sandbox is not in its commands' env.
    let (_, env) = sh(&rt, &sid, "env").await;
    assert!(!env.contains("KILN_AGENT_SECRET"), "{env}");

    // Straight to the listener: a wrong secret, a stranger's line, no line: closed.
    for preamble in [
        "KILN-EGRESS/1 Egress_1 0123456789abcdef0123456789abcdef\n".to_string(),
        "KILN-EGRESS/1 plain_1 0123456789abcdef0123456789abcdef\n".to_string(),
        "GET http://example.com/ HTTP/1.1\n".to_string(),
        "x".repeat(600),
    ] {
        let mut conn = tokio::net::TcpStream::connect(listen).await.unwrap();
        let _ = conn.write_all(preamble.as_bytes()).await;
        let _ = conn.write_all(b"kiln-egress\n").await;
        let mut back = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut back))
            .await
            .expect("closed, not held open");
        assert!(read.is_err() || back.is_empty(), "{preamble:?}: {back:?}");
    }
    assert_eq!(first.served.load(Ordering::SeqCst), 1);

    // A restarted server adopts the Pod; its relay dials the new listener, which serves
    // it only once `attach_egress` says with what.
    drop(rt);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old listener stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restarted = egress_runtime(&cluster, "node-e", listen);
    let report = restarted
        .reconcile(&[sid.clone(), plain.clone()])
        .await
        .unwrap();
    assert_eq!(report.adopted.len(), 2);
    let second = Reverser::default();
    let err = restarted
        .attach_egress(
            &id("nobody"),
            Egress(std::sync::Arc::new(Reverser::default())),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound(_)), "{err}");
    restarted
        .attach_egress(
            &sid,
            Egress(std::sync::Arc::new(Reverser {
                served: std::sync::Arc::clone(&second.served),
            })),
        )
        .await
        .unwrap();
    assert_eq!(ask_proxy(&restarted, &sid).await, "sserge-nlik\n");
    assert_eq!(second.served.load(Ordering::SeqCst), 1);
    restarted.destroy(&sid).await.unwrap();
    restarted.destroy(&plain).await.unwrap();
}
