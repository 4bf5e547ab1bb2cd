//! Create, exec, files, destroy on real sandboxes (root, bubblewrap, busybox rootfs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use kiln_protocol::ExecRequest;
use kiln_runtime::Runtime;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exec_destroy() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let start = Instant::now();
    let handle = rt.create(busybox_spec("life1")).await.unwrap();
    eprintln!("create took {:?}", start.elapsed());
    assert!(!handle.agent_version.is_empty());
    let done = rt
        .exec(
            &handle.id,
            ExecRequest::shell("echo $$; hostname; cat /testbed/hello.txt"),
        )
        .await
        .unwrap();
    let out = done.stdout.to_string_lossy();
    assert_eq!(done.exit_code, 0, "{out} {}", done.stderr.to_string_lossy());
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "the shell is not PID 1, the agent is");
    assert_eq!(lines[1], "kiln");
    assert_eq!(lines[2], "hello from the image");
    let dir = rt.sandbox_dir(&handle.id);
    assert!(!mounted_under(&dir).is_empty());
    rt.destroy(&handle.id).await.unwrap();
    assert!(
        mounted_under(&dir).is_empty(),
        "left mounted: {:?}",
        mounted_under(&dir)
    );
    assert!(!dir.exists());
    assert!(rt
        .exec(&handle.id, ExecRequest::shell("true"))
        .await
        .is_err());
}
