//! A sandbox's egress on the local backend: connections its processes open to
//! `EGRESS_PROXY_ADDR` reach the caller's handler (here: it reads a line and answers
//! with it reversed), bytes intact both ways; a sandbox without egress has nothing
//! there; the handler's socket goes with the sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kiln_protocol::ExecRequest;
use kiln_runtime::{Egress, EgressHandler, EgressStream, Runtime};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Counts what it served (shared with the test).
#[derive(Default)]
struct Reverser {
    served: Arc<AtomicUsize>,
}

impl EgressHandler for Reverser {
    fn serve(&self, stream: EgressStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let served = Arc::clone(&self.served);
        Box::pin(async move {
            served.fetch_add(1, Ordering::SeqCst);
            let mut stream = BufReader::new(stream);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_proxy_address_reach_the_handler() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let handler = Reverser::default();
    let served = Arc::clone(&handler.served);
    let mut spec = busybox_spec("egress1");
    spec.egress = Some(Egress(Arc::new(handler)));
    rt.create_local(spec).await.unwrap();
    rt.create_local(busybox_spec("egress2")).await.unwrap();

    let (host, port) = kiln_runtime::EGRESS_PROXY_ADDR.split_once(':').unwrap();
    let ask = format!("echo kiln-egress | nc {host} {port}");
    let done = rt
        .exec(
            &id("egress1"),
            ExecRequest::shell(ask.clone()).timeout_ms(10_000),
        )
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "sserge-nlik\n", "{done:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Without egress nothing listens there (and nothing else is reachable).
    let done = rt
        .exec(&id("egress2"), ExecRequest::shell(ask).timeout_ms(10_000))
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "", "{done:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // The socket goes with its sandbox.
    let socket = rt.root.path().join("sandboxes/egress1/run/egress.sock");
    rt.destroy(&id("egress1")).await.unwrap();
    assert!(!socket.exists(), "{socket:?} outlived its sandbox");
    rt.destroy(&id("egress2")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_sandbox_is_served_again_once_its_egress_is_attached() {
    if !prerequisites() {
        return;
    }
    // The runtime that "restarts": its table and its egress loop go, the sandbox stays.
    let survivor = runtime();
    let mut config = kiln_runtime::local::LocalConfig::new(survivor.root.path(), agent_binary());
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let before = kiln_runtime::local::LocalRuntime::new(config).unwrap();
    let mut spec = busybox_spec("adopted");
    spec.egress = Some(Egress(Arc::new(Reverser::default())));
    before.create_local(spec).await.unwrap();
    drop(before);

    let report = survivor.reconcile(&[id("adopted")]).await.unwrap();
    assert_eq!(report.adopted, [id("adopted")]);
    let (host, port) = kiln_runtime::EGRESS_PROXY_ADDR.split_once(':').unwrap();
    let ask = format!("echo kiln-egress | nc {host} {port}");
    let run = |cmd: String| {
        let survivor = &survivor;
        async move {
            survivor
                .exec(&id("adopted"), ExecRequest::shell(cmd).timeout_ms(10_000))
                .await
                .unwrap()
        }
    };
    // Nobody serves the old socket any more: the agent's relay finds no one.
    let done = run(ask.clone()).await;
    assert_eq!(done.stdout.to_string_lossy(), "", "{done:?}");

    let handler = Reverser::default();
    let served = Arc::clone(&handler.served);
    survivor
        .attach_egress(&id("adopted"), Egress(Arc::new(handler)))
        .await
        .unwrap();
    let done = run(ask).await;
    assert_eq!(done.stdout.to_string_lossy(), "sserge-nlik\n", "{done:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);

    // Unknown sandboxes are not found.
    let err = survivor
        .attach_egress(&id("nobody"), Egress(Arc::new(Reverser::default())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kiln_runtime::RuntimeError::NotFound(_)),
        "{err:?}"
    );
    survivor.destroy(&id("adopted")).await.unwrap();
}
