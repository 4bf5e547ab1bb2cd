//! A restarted server reconciles: unknown sandboxes are torn down, known live ones adopted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kiln_protocol::ExecRequest;
use kiln_runtime::local::{LocalConfig, LocalRuntime};
use kiln_runtime::Runtime;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_known_and_removes_unknown() {
    if !prerequisites() {
        return;
    }
    // The runtime that will "restart": its table is lost, its sandboxes keep running.
    let survivor = runtime();
    let mut config = LocalConfig::new(survivor.root.path(), agent_binary());
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let before = LocalRuntime::new(config).unwrap();
    before.create_local(busybox_spec("keep")).await.unwrap();
    let orphan = before.create_local(busybox_spec("orphan")).await.unwrap();
    before
        .exec(&id("keep"), ExecRequest::shell("echo state > /root/state"))
        .await
        .unwrap();
    let orphan_dir = before.sandbox_dir(&orphan.id);
    let orphan_pids = before.pids(&orphan.id).unwrap();
    drop(before);

    let report = survivor
        .reconcile(&[id("keep"), id("vanished")])
        .await
        .unwrap();
    assert_eq!(report.adopted, [id("keep")]);
    assert_eq!(report.removed, ["orphan"]);
    assert_eq!(report.lost, [id("vanished")]);

    assert!(!orphan_dir.exists());
    assert!(mounted_under(&orphan_dir).is_empty());
    for pid in orphan_pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "orphan pid {pid} alive: {stat}"
        );
    }
    let done = survivor
        .exec(&id("keep"), ExecRequest::shell("cat /root/state"))
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "state\n");

    // Shutdown leaves nothing mounted or running.
    let keep_dir = survivor.sandbox_dir(&id("keep"));
    let keep_pids = survivor.pids(&id("keep")).unwrap();
    let sandboxes = std::fs::canonicalize(survivor.root.path().join("sandboxes")).unwrap();
    let links_to_root = || {
        std::fs::read_dir("/run/kiln")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == sandboxes))
            .count()
    };
    assert_eq!(
        links_to_root(),
        1,
        "the short socket link exists while running"
    );
    survivor.shutdown().await.unwrap();
    assert_eq!(
        links_to_root(),
        0,
        "the short socket link is removed at shutdown"
    );
    assert!(mounted_under(survivor.root.path()).is_empty());
    assert!(!keep_dir.exists());
    for pid in keep_pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "pid {pid} alive: {stat}"
        );
    }
}
