//! The Kubernetes backend's agent-sandbox mode against the test API server serving
//! kubernetes-sigs/agent-sandbox's v1beta1 API, with its stand-in controller and test
//! kubelet (`kiln-kube-test`): discovery picks the mode; a claim is served cold (a new
//! Sandbox → Pod) or from a warm pool (no new Pod, faster); the TTL is the claim's
//! `shutdownTime`; failures (image, scheduling, a missing pool, a dead container) are
//! clear errors; reconciliation by label. The injected agent runs for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use kiln_kube_test::{ClusterOptions, TestCluster};
use kiln_protocol::{ExecRequest, WriteFileRequest};
use kiln_runtime::kubernetes::{
    claim_name, pod_name, template_name, KubeMode, KubeRuntime, KubeSettings, KubernetesMode,
};
use kiln_runtime::{Limits, Runtime, RuntimeError, SandboxExit, SandboxId, SandboxSpec};
use serde_json::Value;

const AGENT_IMAGE: &str = "kiln/agent:test";
const NS: &str = "sandboxes";

fn id(s: &str) -> SandboxId {
    SandboxId::new(s).unwrap()
}

async fn cluster(agent_sandbox: bool, missing: &[&str], start_delay: Duration) -> TestCluster {
    let mut options = ClusterOptions::new(kiln_test_support::agent_binary(), AGENT_IMAGE);
    options.missing_images = missing.iter().map(|s| s.to_string()).collect();
    options.node_memory_bytes = 4 << 30;
    options.bookmark_interval = Duration::from_millis(50);
    options.start_delay = start_delay;
    options.agent_sandbox = agent_sandbox;
    TestCluster::start(options).await.unwrap()
}

fn settings(cluster: &TestCluster, node: &str) -> KubeSettings {
    let mut settings = KubeSettings::new(node);
    settings.kubeconfig = Some(cluster.kubeconfig());
    settings.namespace = NS.into();
    settings.agent_image = AGENT_IMAGE.into();
    settings.ready_timeout = Duration::from_secs(30);
    settings
}

fn runtime(cluster: &TestCluster, node: &str) -> KubeRuntime {
    KubeRuntime::new(settings(cluster, node))
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

fn named<'a>(objects: &'a [Value], name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["metadata"]["name"] == name)
}

fn pod_names(cluster: &TestCluster) -> Vec<String> {
    cluster
        .pods()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Waits until pool `name` reports `ready` ready sandboxes.
async fn pool_ready(cluster: &TestCluster, name: &str, ready: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pools = cluster.custom("sandboxwarmpools");
        let now = named(&pools, name).and_then(|p| p["status"]["readyReplicas"].as_u64());
        if now == Some(ready) {
            return;
        }
        assert!(Instant::now() < deadline, "pool {name}: {pools:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_picks_the_mode() {
    // No agent-sandbox API: pods mode, a Pod per sandbox.
    let plain = cluster(false, &[], Duration::ZERO).await;
    let rt = runtime(&plain, "node-a");
    assert_eq!(rt.mode().await.unwrap(), KubeMode::Pods);
    let sid = id("plain");
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    assert_eq!(pod_names(&plain), vec![pod_name(&sid)]);
    rt.destroy(&sid).await.unwrap();
    // Asking for agent-sandbox where it is not served is a clear "not ready".
    let mut forced = settings(&plain, "node-a");
    forced.mode = KubernetesMode::AgentSandbox;
    let err = KubeRuntime::new(forced)
        .create(spec(&id("forced"), "python:3.12"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::HostNotReady(m) if m.contains("agents.x-k8s.io")),
        "{err}"
    );

    // Served: agent-sandbox mode, unless configured to pods.
    let served = cluster(true, &[], Duration::ZERO).await;
    let rt = runtime(&served, "node-a");
    assert_eq!(rt.mode().await.unwrap(), KubeMode::AgentSandbox);
    let health = rt.health().await;
    assert!(
        health.checks[0].detail.contains("agent-sandbox mode"),
        "{health:?}"
    );
    let mut pods_only = settings(&served, "node-a");
    pods_only.mode = KubernetesMode::Pods;
    assert_eq!(
        KubeRuntime::new(pods_only).mode().await.unwrap(),
        KubeMode::Pods
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_without_a_warm_sandbox_starts_cold_and_runs_the_agent() {
    let cluster = cluster(true, &[], Duration::ZERO).await;
    let rt = runtime(&cluster, "node-a");
    let sid = id("Cold_1");
    let mut spec = spec(&sid, "python:3.12");
    spec.env.insert("GREETING".into(), "hi".into());
    let template = template_name(rt.settings(), &spec, "python:3.12");
    // Server errors on the way (discovery, the template's objects) are retried.
    cluster.fail_next(500, 2);
    rt.create(spec).await.unwrap();

    // One template (the Pod of pods mode, the agent injected), its pool (empty), its
    // Secret, and the claim on it, carrying the session's env.
    let templates = cluster.custom("sandboxtemplates");
    let t = named(&templates, &template).expect("template");
    let pod_spec = &t["spec"]["podTemplate"]["spec"];
    assert_eq!(pod_spec["initContainers"][0]["image"], AGENT_IMAGE);
    assert_eq!(pod_spec["automountServiceAccountToken"], false);
    assert_eq!(t["spec"]["networkPolicy"]["egress"], serde_json::json!([]));
    let pools = cluster.custom("sandboxwarmpools");
    assert_eq!(named(&pools, &template).unwrap()["spec"]["replicas"], 0);
    assert!(cluster
        .secrets()
        .iter()
        .any(|s| s.metadata.name.as_deref() == Some(&template)));
    let claims = cluster.custom("sandboxclaims");
    let claim = named(&claims, &claim_name(&sid)).expect("claim");
    assert_eq!(claim["spec"]["warmPoolRef"]["name"], template.as_str());
    assert_eq!(claim["spec"]["env"][0]["name"], "GREETING");
    // Cold: the Sandbox and its Pod are named after the claim.
    assert_eq!(
        claim["status"]["sandbox"]["name"],
        claim_name(&sid).as_str()
    );
    assert_eq!(pod_names(&cluster), vec![claim_name(&sid)]);
    assert!(
        cluster.network_policies().is_empty(),
        "the template's policy is the controller's"
    );

    let (code, out) = sh(
        &rt,
        &sid,
        "echo $GREETING; echo ${KILN_AGENT_SECRET:-hidden}",
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "hi\nhidden\n"));
    let file = cluster
        .pod_dir(NS, &claim_name(&sid))
        .join("notes.txt")
        .to_string_lossy()
        .into_owned();
    let request = WriteFileRequest {
        path: file.clone(),
        content: "through the claim\n".into(),
        mode: None,
        create_parents: false,
    };
    rt.write_file(&sid, request).await.unwrap();
    let read = rt.read_file(&sid, &file, None).await.unwrap();
    assert_eq!(read.content.as_bytes(), b"through the claim\n");

    // Deleting the claim ends the sandbox; the template and pool stay for the next.
    rt.destroy(&sid).await.unwrap();
    assert!(cluster.custom("sandboxclaims").is_empty());
    assert!(cluster.custom("sandboxes").is_empty());
    assert!(cluster.pods().is_empty());
    assert_eq!(cluster.custom("sandboxtemplates").len(), 1);
    assert!(matches!(
        rt.destroy(&sid).await,
        Err(RuntimeError::NotFound(_))
    ));
    // Readiness came from watches, never from polling.
    let gets = cluster
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET") && !r.contains('?') && r.contains("/sandboxclaims/"))
        .count();
    assert_eq!(gets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_serves_a_claim_faster_and_without_a_new_pod() {
    // The kubelet takes 300 ms to take up a Pod: what a warm sandbox saves.
    let cluster = cluster(true, &[], Duration::from_millis(300)).await;
    let mut s = settings(&cluster, "node-a");
    s.warm_pools = BTreeMap::from([("python:3.12".to_string(), 1)]);
    let rt = KubeRuntime::new(s);
    let warm_id = id("warm");
    let template = rt.prepare(&spec(&warm_id, "python:3.12")).await.unwrap();
    pool_ready(&cluster, &template, 1).await;
    let before = pod_names(&cluster);
    assert_eq!(before.len(), 1);

    let started = Instant::now();
    rt.create(spec(&warm_id, "python:3.12")).await.unwrap();
    let warm = started.elapsed();
    let claims = cluster.custom("sandboxclaims");
    let bound = named(&claims, &claim_name(&warm_id)).unwrap()["status"]["sandbox"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bound, before[0], "the claim got the warm sandbox's Pod");
    let (_, out) = sh(&rt, &warm_id, "echo warm").await;
    assert_eq!(out, "warm\n");
    // The pool refills.
    pool_ready(&cluster, &template, 1).await;
    assert_eq!(cluster.pods().len(), 2);

    // Another image has no pool: cold, through the kubelet's delay.
    let cold_id = id("cold");
    let started = Instant::now();
    rt.create(spec(&cold_id, "rust:1.90")).await.unwrap();
    let cold = started.elapsed();
    assert!(cold >= Duration::from_millis(300), "{cold:?}");
    assert!(warm < cold, "warm {warm:?} cold {cold:?}");
    rt.shutdown().await.unwrap();
    // What is left is the refilled pool's sandbox.
    assert_eq!(cluster.pods().len(), 1);
    assert!(cluster.custom("sandboxclaims").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_is_the_claims_shutdown_time() {
    let cluster = cluster(true, &[], Duration::ZERO).await;
    let mut s = settings(&cluster, "node-a");
    s.sandbox_ttl = Duration::from_secs(2);
    let rt = KubeRuntime::new(s);
    let sid = id("ttl");
    let before = SystemTime::now();
    // The claim's and the Pod's first watches break after one event: both resume.
    cluster.break_next_watches(2);
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    let claims = cluster.custom("sandboxclaims");
    let lifecycle = &named(&claims, &claim_name(&sid)).unwrap()["spec"]["lifecycle"];
    assert_eq!(lifecycle["shutdownPolicy"], "Delete");
    let at: k8s_openapi::jiff::Timestamp =
        lifecycle["shutdownTime"].as_str().unwrap().parse().unwrap();
    let from = before
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (from + 1..=from + 3).contains(&at.as_second()),
        "{at} vs {from}"
    );
    // The cluster ends it then, and the runtime sees the sandbox go.
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait_exit(&sid))
        .await
        .expect("the expiry is seen")
        .unwrap();
    assert!(matches!(exit, SandboxExit::Died { .. }), "{exit:?}");
    assert!(cluster.custom("sandboxclaims").is_empty());
    assert!(cluster.pods().is_empty());
}

fn shutdown_second(cluster: &TestCluster, sid: &SandboxId) -> i64 {
    let claims = cluster.custom("sandboxclaims");
    let claim = named(&claims, &claim_name(sid)).expect("its claim");
    let at: k8s_openapi::jiff::Timestamp = claim["spec"]["lifecycle"]["shutdownTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    at.as_second()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_expiry_is_the_shutdown_time_and_moves_with_it() {
    let cluster = cluster(true, &[], Duration::ZERO).await;
    // The configured backstop stays 24 h: the spec's expiry wins.
    let rt = runtime(&cluster, "node-a");
    let at = SystemTime::now() + Duration::from_secs(2);
    let second = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (kept, moved) = (id("kept"), id("moved"));
    for sid in [&kept, &moved] {
        let mut s = spec(sid, "python:3.12");
        s.expires_at = Some(at);
        rt.create(s).await.unwrap();
        assert_eq!(shutdown_second(&cluster, sid), second);
    }
    // The session's TTL moves an hour on: so does the claim's end.
    rt.set_expiry(&moved, at + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(shutdown_second(&cluster, &moved), second + 3600);
    // The cluster ends the other at its session's end; the runtime sees it go.
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait_exit(&kept))
        .await
        .expect("the expiry is seen")
        .unwrap();
    assert!(matches!(exit, SandboxExit::Died { .. }), "{exit:?}");
    // The moved one outlives its first end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sh(&rt, &moved, "echo on").await, (0, "on\n".to_string()));
    let claims = cluster.custom("sandboxclaims");
    assert_eq!(claims.len(), 1, "{claims:#?}");
    assert!(named(&claims, &claim_name(&moved)).is_some());
    // A Pod-mode sandbox or one it does not hold: nothing to move / not found.
    assert!(matches!(
        rt.set_expiry(&id("nobody"), at).await,
        Err(RuntimeError::NotFound(_))
    ));
    rt.destroy(&moved).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_become_clear_errors_and_leave_nothing() {
    let cluster = cluster(true, &["missing/image:1"], Duration::ZERO).await;
    let rt = runtime(&cluster, "node-a");

    let err = rt
        .create(spec(&id("pull"), "missing/image:1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::ImageNotFound { reference, .. } if reference == "missing/image:1"),
        "{err}"
    );
    let mut big = spec(&id("big"), "python:3.12");
    big.limits.memory_bytes = Some(64 << 30);
    let err = rt.create(big).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::StartFailed { reason, .. } if reason.contains("Unschedulable")),
        "{err}"
    );
    // The pool went away under the template: the claim's own status says so.
    let gone = spec(&id("nopool"), "node:22");
    let template = rt.prepare(&gone).await.unwrap();
    assert!(cluster.delete_custom("sandboxwarmpools", NS, &template));
    let started = Instant::now();
    let err = rt.create(gone).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::StartFailed { reason, .. }
            if reason.contains("WarmPoolNotFound") && reason.contains(&template)),
        "{err}"
    );
    // From the claim's status at once, not from running out of `ready_timeout`.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        cluster.custom("sandboxclaims").is_empty(),
        "failed claims are deleted"
    );
    assert!(cluster.pods().is_empty(), "{:?}", pod_names(&cluster));

    // A container that dies is a death of the sandbox, with the reason.
    let sid = id("dies");
    rt.create(spec(&sid, "python:3.12")).await.unwrap();
    assert!(cluster.kill_container(NS, &claim_name(&sid), "OOMKilled"));
    let exit = tokio::time::timeout(Duration::from_secs(10), rt.wait_exit(&sid))
        .await
        .expect("the death is seen")
        .unwrap();
    match exit {
        SandboxExit::Died { reason } => assert!(reason.contains("lack of memory"), "{reason}"),
        other => panic!("{other:?}"),
    }
    rt.destroy(&sid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_adopts_known_claims_and_removes_the_rest_of_its_node() {
    let cluster = cluster(true, &[], Duration::ZERO).await;
    let first = runtime(&cluster, "node-a");
    let neighbour = runtime(&cluster, "node-b");
    let (kept, dropped, theirs) = (id("kept"), id("dropped"), id("theirs"));
    first.create(spec(&kept, "python:3.12")).await.unwrap();
    first.create(spec(&dropped, "python:3.12")).await.unwrap();
    neighbour
        .create(spec(&theirs, "python:3.12"))
        .await
        .unwrap();

    let restarted = runtime(&cluster, "node-a");
    let report = restarted
        .reconcile(std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert_eq!(report.adopted, vec![kept.clone()]);
    assert_eq!(report.removed, vec![claim_name(&dropped)]);
    let (_, out) = sh(&restarted, &kept, "echo adopted").await;
    assert_eq!(out, "adopted\n");
    let claims: Vec<String> = cluster
        .custom("sandboxclaims")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        claims.contains(&claim_name(&theirs)),
        "another node's claim was touched"
    );
    assert!(!claims.contains(&claim_name(&dropped)));
    assert!(!pod_names(&cluster).contains(&claim_name(&dropped)));
    restarted.shutdown().await.unwrap();
    neighbour.shutdown().await.unwrap();
    assert!(cluster.pods().is_empty());
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// create → ready and an exec round trip, median of 20, in each mode (pods; claims
/// cold; claims from a warm pool). `cargo test … -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_create_and_exec_in_each_mode() {
    const N: usize = 20;
    for (label, agent_sandbox, pool) in [
        ("pods", false, 0),
        ("pods warm", false, N as u32),
        ("agent-sandbox cold", true, 0),
        ("agent-sandbox warm", true, N as u32),
    ] {
        let cluster = cluster(agent_sandbox, &[], Duration::ZERO).await;
        let mut s = settings(&cluster, "bench");
        s.warm_pools = BTreeMap::from([("python:3.12".to_string(), pool)]);
        let rt = KubeRuntime::new(s);
        if pool > 0 {
            let template = rt.prepare(&spec(&id("x"), "python:3.12")).await.unwrap();
            if agent_sandbox {
                pool_ready(&cluster, &template, u64::from(pool)).await;
            } else {
                while rt.warm_ready(&template) < pool as usize {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let (mut creates, mut execs) = (Vec::new(), Vec::new());
        for i in 0..N {
            let sid = id(&format!("b{i}"));
            let started = Instant::now();
            rt.create(spec(&sid, "python:3.12")).await.unwrap();
            creates.push(started.elapsed());
            for _ in 0..3 {
                let started = Instant::now();
                sh(&rt, &sid, "true").await;
                execs.push(started.elapsed());
            }
        }
        println!(
            "{label}: create→ready median {:?}, exec round trip median {:?}",
            median(creates),
            median(execs)
        );
        rt.shutdown().await.unwrap();
    }
}
