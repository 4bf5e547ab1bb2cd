//! Snapshot a sandbox, fork it, and check both sides see what they should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use kiln_protocol::ExecRequest;
use kiln_runtime::{Runtime, RuntimeError, SandboxSpec, SnapshotId};
use support::*;

async fn out(rt: &TestRuntime, sandbox: &str, script: &str) -> String {
    let done = rt
        .exec(&id(sandbox), ExecRequest::shell(script))
        .await
        .unwrap();
    assert_eq!(
        done.exit_code,
        0,
        "{script}: {}",
        done.stderr.to_string_lossy()
    );
    done.stdout.to_string_lossy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_sees_the_snapshot_and_nothing_after_it() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let mut spec = busybox_spec("parent");
    spec.env.insert("FROM_PARENT".into(), "yes".into());
    rt.create_local(spec).await.unwrap();
    out(
        &rt,
        "parent",
        "echo before > /testbed/a.txt; rm /testbed/hello.txt; mkdir -p /root/deep/dir; \
         echo x > /root/deep/dir/f; head -c 10485760 /dev/urandom > /testbed/big.bin; \
         md5sum /testbed/big.bin > /root/big.md5",
    )
    .await;

    let start = Instant::now();
    let snap = rt.snapshot(&id("parent")).await.unwrap();
    eprintln!("snapshot of 10 MB took {:?}", start.elapsed());
    assert_eq!(snap.sandbox, id("parent"));
    let layers = rt.snapshot_layers(&snap.id).unwrap();
    assert!(layers.dirs()[0].join("testbed/a.txt").is_file());
    assert_eq!(layers.dirs().len(), 2, "{layers:?}");

    // The parent keeps running and changes after the snapshot.
    out(
        &rt,
        "parent",
        "echo after > /testbed/after.txt; echo changed > /testbed/a.txt",
    )
    .await;

    let start = Instant::now();
    rt.create(SandboxSpec::fork(id("fork"), &snap))
        .await
        .unwrap();
    eprintln!("fork took {:?}", start.elapsed());
    let seen = out(
        &rt,
        "fork",
        "cat /testbed/a.txt; ls /testbed; cat /root/deep/dir/f; md5sum -c /root/big.md5; echo $FROM_PARENT",
    )
    .await;
    assert_eq!(
        seen,
        "before\na.txt\nbig.bin\nx\n/testbed/big.bin: OK\nyes\n"
    );

    // And the fork's own changes stay in the fork.
    out(&rt, "fork", "echo fork-only > /testbed/fork.txt").await;
    let parent = out(&rt, "parent", "ls /testbed; cat /testbed/a.txt").await;
    assert_eq!(parent, "a.txt\nafter.txt\nbig.bin\nchanged\n");

    // A fork of a fork stacks both snapshot layers.
    let snap2 = rt.snapshot(&id("fork")).await.unwrap();
    let layers2 = rt.snapshot_layers(&snap2.id).unwrap();
    assert_eq!(layers2.dirs().len(), 3);
    rt.create(SandboxSpec::fork(id("fork2"), &snap2))
        .await
        .unwrap();
    assert_eq!(
        out(&rt, "fork2", "cat /testbed/fork.txt /testbed/a.txt").await,
        "fork-only\nbefore\n"
    );

    rt.destroy(&id("fork2")).await.unwrap();
    rt.remove_snapshot(&snap2.id).await.unwrap();
    assert!(!layers2.dirs()[0].exists());
    assert!(matches!(
        rt.create(SandboxSpec::fork(id("fork3"), &snap2)).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(SnapshotId::new("../../etc").is_err());
}
