//! Snapshot a sandbox, fork it, and check both sides see what they should.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
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

/// What a sandbox sees of its own root: its files, its mounts (sorted, without the ids
/// and propagation tags that differ between any two sandboxes) and the agent's directory.
const ROOT_VIEW: &str = "cat /testbed/*.txt; ls -a / /testbed; ls -ld /.kiln; \
    awk '{ for (i = 7; $i != \"-\"; i++) ; printf \"%s %s %s\", $4, $5, $6; \
    for (j = i; j <= NF; j++) printf \" %s\", $j; print \"\" }' /proc/self/mountinfo | sort";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_sandbox_takes_a_forks_root_and_looks_like_a_cold_fork() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    rt.create_local(busybox_spec("parent")).await.unwrap();
    out(
        &rt,
        "parent",
        "echo before > /testbed/a.txt; rm /testbed/hello.txt",
    )
    .await;
    let snap = rt.snapshot(&id("parent")).await.unwrap();
    // No pool yet: a fork and a create started the usual way.
    rt.create(SandboxSpec::fork(id("cold"), &snap))
        .await
        .unwrap();
    rt.create_local(busybox_spec("image-cold")).await.unwrap();
    // Warm sandboxes of the parent's class, started before the fork's root exists.
    rt.keep_warm(&busybox_spec("template"), 2).await.unwrap();
    let sandboxes = rt.root.path().join("sandboxes");
    let state = |name: &str| {
        std::fs::read_to_string(sandboxes.join(name).join("state.json")).unwrap_or_default()
    };
    rt.create(SandboxSpec::fork(id("hot"), &snap))
        .await
        .unwrap();
    assert!(
        state("hot").contains("warm-"),
        "the fork did not take a warm sandbox: {}",
        state("hot")
    );
    assert!(!state("cold").contains("warm-"), "{}", state("cold"));

    let cold = out(&rt, "cold", ROOT_VIEW).await;
    let hot = out(&rt, "hot", ROOT_VIEW).await;
    assert!(cold.starts_with("before\n"), "{cold}");
    assert!(cold.contains(" / rw,nosuid,nodev"), "{cold}");
    assert!(cold.contains(" /.kiln/run ro,"), "{cold}");
    assert_eq!(hot, cold);

    // The taken sandbox writes into its own layer, which its snapshot holds alone.
    out(&rt, "hot", "echo hot > /testbed/hot.txt; rm /testbed/a.txt").await;
    let hot_snap = rt.snapshot(&id("hot")).await.unwrap();
    let layers = rt.snapshot_layers(&hot_snap.id).unwrap();
    let top = layers.dirs()[0].clone();
    assert_eq!(
        std::fs::read_to_string(top.join("testbed/hot.txt")).unwrap(),
        "hot\n"
    );
    assert!(!top.join(".kiln-root").exists());
    assert_eq!(
        layers.dirs()[1..],
        rt.snapshot_layers(&snap.id).unwrap().dirs()[..]
    );
    assert_eq!(
        out(&rt, "cold", "ls /testbed; cat /testbed/a.txt").await,
        "a.txt\nbefore\n"
    );

    // The other warm sandbox serves a create of the image as well, where bubblewrap's
    // mount points are new: made as bubblewrap makes them, in the sandbox's own layer.
    let image = out(&rt, "image-cold", ROOT_VIEW).await;
    assert!(image.starts_with("hello from the image\n"), "{image}");
    rt.create_local(busybox_spec("image")).await.unwrap();
    assert!(state("image").contains("warm-"), "{}", state("image"));
    let upper = |name: &str| {
        let mut listing = Vec::new();
        tree(
            &sandboxes.join(name).join("disk/upper"),
            Path::new("."),
            &mut listing,
        );
        listing.sort();
        listing.join("")
    };
    assert!(
        upper("image").contains("./.kiln/agent f 444 "),
        "{}",
        upper("image")
    );
    assert_eq!(upper("image"), upper("image-cold"));
    assert_eq!(out(&rt, "image", ROOT_VIEW).await, image);

    for name in ["hot", "image", "image-cold"] {
        rt.destroy(&id(name)).await.unwrap();
        assert!(!rt.root.path().join("sandboxes").join(name).exists());
    }
}

/// `<path> <d|f|l> <mode, octal> <size>` of every entry under `dir` (what `find -printf`
/// would print; the cgroup v2 VM's `find` is busybox's, without `-printf`).
fn tree(dir: &Path, relative: &Path, out: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let kind = if meta.is_dir() {
        "d"
    } else if meta.is_symlink() {
        "l"
    } else {
        "f"
    };
    let mode = meta.permissions().mode() & 0o7777;
    out.push(format!(
        "{} {kind} {mode:o} {}\n",
        relative.display(),
        meta.len()
    ));
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            tree(&entry.path(), &relative.join(entry.file_name()), out);
        }
    }
}
