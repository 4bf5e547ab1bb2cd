//! Create, exec, files, destroy on real sandboxes (root, bubblewrap, busybox rootfs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use kiln_protocol::{ExecEvent, ExecRequest, FileKind, OutputStream, WriteFileRequest};
use kiln_runtime::local::{LocalSpec, RootLayers};
use kiln_runtime::{Runtime, RuntimeError, SandboxExit, SandboxSpec};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exec_destroy_leaves_nothing_behind() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let start = Instant::now();
    let handle = rt.create_local(busybox_spec("life1")).await.unwrap();
    eprintln!("create took {:?}", start.elapsed());
    assert!(!handle.agent_version.is_empty());
    let done = rt
        .exec(
            &handle.id,
            ExecRequest::shell("echo $$; hostname; cat /testbed/hello.txt; cat /proc/1/cmdline"),
        )
        .await
        .unwrap();
    let out = done.stdout.to_string_lossy();
    assert_eq!(done.exit_code, 0, "{out} {}", done.stderr.to_string_lossy());
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "the shell is not PID 1, the agent is");
    assert_eq!(lines[1], "kiln");
    assert_eq!(lines[2], "hello from the image");
    assert!(
        lines[3].starts_with("/.kiln/agent"),
        "PID 1 is {:?}",
        lines[3]
    );

    let listed = rt.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, handle.id);
    assert!(listed[0].memory_bytes.is_some());

    let dir = rt.sandbox_dir(&handle.id);
    let pids = rt.pids(&handle.id).unwrap();
    assert!(pids.contains(&(rt.init_pid(&handle.id).unwrap() as i32)));
    assert!(!mounted_under(&dir).is_empty());
    rt.destroy(&handle.id).await.unwrap();
    assert!(
        mounted_under(&dir).is_empty(),
        "left mounted: {:?}",
        mounted_under(&dir)
    );
    assert!(!dir.exists());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "pid {pid} survived destroy"
        );
    }
    assert!(matches!(
        rt.exec(&handle.id, ExecRequest::shell("true")).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_workdir_and_exec_options() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let mut spec = busybox_spec("env1");
    spec.env.insert("IMAGE_VAR".into(), "from-image".into());
    spec.env.insert("PATH".into(), "/bin".into());
    spec.workdir = Some("/root".into());
    spec.hostname = "box-7".into();
    let h = rt.create_local(spec).await.unwrap();

    let done = rt
        .exec(
            &h.id,
            ExecRequest::shell("echo $IMAGE_VAR $REQ_VAR; pwd; hostname"),
        )
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "from-image\n/root\nbox-7\n");
    let done = rt
        .exec(
            &h.id,
            ExecRequest::shell("echo $IMAGE_VAR $REQ_VAR; pwd")
                .env("REQ_VAR", "from-request")
                .env("IMAGE_VAR", "overridden")
                .cwd("/testbed"),
        )
        .await
        .unwrap();
    assert_eq!(
        done.stdout.to_string_lossy(),
        "overridden from-request\n/testbed\n"
    );

    let done = rt
        .exec(&h.id, ExecRequest::shell("cat; exit 3").stdin("fed"))
        .await
        .unwrap();
    assert_eq!(
        (done.exit_code, done.stdout.to_string_lossy().as_str()),
        (3, "fed")
    );

    let mut events = Vec::new();
    let mut sink = |e: ExecEvent| events.push(e);
    let done = rt
        .exec_streaming(
            &h.id,
            ExecRequest::shell("echo one; echo two >&2"),
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(done.exit_code, 0);
    assert!(matches!(events.first(), Some(ExecEvent::Started { .. })));
    let streamed: Vec<OutputStream> = events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Output { stream, .. } => Some(*stream),
            _ => None,
        })
        .collect();
    assert!(streamed.contains(&OutputStream::Stdout) && streamed.contains(&OutputStream::Stderr));

    let done = rt
        .exec(&h.id, ExecRequest::shell("sleep 5").timeout_ms(200))
        .await
        .unwrap();
    assert!(done.timed_out);
    assert_eq!(done.exit_code, 124);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_through_the_agent() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let h = rt.create_local(busybox_spec("files1")).await.unwrap();
    let written = rt
        .write_file(
            &h.id,
            WriteFileRequest {
                path: "/testbed/pkg/mod.py".into(),
                content: "def f():\n    return 1\n".into(),
                mode: Some(0o640),
                create_parents: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(written, 22);
    let replaced = rt
        .str_replace(&h.id, "/testbed/pkg/mod.py", "return 1", "return 2")
        .await
        .unwrap();
    assert_eq!(replaced.line, 2);
    let file = rt
        .read_file(&h.id, "/testbed/pkg/mod.py", None)
        .await
        .unwrap();
    assert_eq!(file.content.to_string_lossy(), "def f():\n    return 2\n");
    assert_eq!(file.mode, 0o640);
    let listing = rt.list_dir(&h.id, "/testbed").await.unwrap();
    let names: Vec<(&str, FileKind)> = listing
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind))
        .collect();
    assert_eq!(
        names,
        [("hello.txt", FileKind::File), ("pkg", FileKind::Dir)]
    );
    let meta = rt.stat(&h.id, "/testbed/pkg/mod.py").await.unwrap();
    assert_eq!(meta.size, 22);
    // Seen by commands too, and it is the sandbox's own copy: the image is untouched.
    let done = rt
        .exec(&h.id, ExecRequest::shell("cat /testbed/pkg/mod.py"))
        .await
        .unwrap();
    assert!(done.stdout.to_string_lossy().contains("return 2"));
    assert!(!busybox_rootfs().join("testbed/pkg").exists());

    let err = rt
        .str_replace(&h.id, "/testbed/pkg/mod.py", "absent", "x")
        .await
        .unwrap_err();
    assert!(err.agent_error().is_some(), "{err}");
    let err = rt.read_file(&h.id, "/nope", None).await.unwrap_err();
    assert!(err.agent_error().is_some(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_and_duplicates_leave_nothing() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let spec = LocalSpec::new(id("bad1"), RootLayers::single("/definitely/not/a/layer"));
    assert!(matches!(
        rt.create_local(spec).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
    assert!(!rt.sandbox_dir(&id("bad1")).exists());

    rt.create_local(busybox_spec("dup1")).await.unwrap();
    assert!(matches!(
        rt.create_local(busybox_spec("dup1")).await,
        Err(RuntimeError::AlreadyExists(_))
    ));
    // The first one is unaffected.
    let done = rt
        .exec(&id("dup1"), ExecRequest::shell("echo ok"))
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "ok\n");

    let report = rt.health().await;
    assert!(report.is_ready(), "{report}");
}

/// An image reference the image store does not know is a typed error, found before
/// anything is made; without an image store every reference is unknown.
#[tokio::test]
async fn unknown_images_are_image_not_found_and_leave_nothing() {
    if !prerequisites() {
        return;
    }
    let store_dir = tempfile::tempdir().unwrap();
    let root = tempfile::Builder::new()
        .prefix("kiln-rt-test-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let config = kiln_runtime::local::LocalConfig::new(root.path(), support::agent_binary());
    let images = kiln_image::ImageStore::open(store_dir.path()).unwrap();
    let with_store = kiln_runtime::local::LocalRuntime::new(config)
        .unwrap()
        .with_images(images);
    let without_store = runtime();
    for rt in [&with_store, &without_store.runtime] {
        let err = rt.check_image("nope/missing:1").await.unwrap_err();
        assert!(
            matches!(&err, RuntimeError::ImageNotFound { reference, .. } if reference == "nope/missing:1"),
            "{err:?}"
        );
        let spec = SandboxSpec::image(id("noimage"), "nope/missing:1");
        let err = rt.create(spec).await.unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err:?}");
        assert!(!rt.sandbox_dir(&id("noimage")).exists());
        assert!(rt.list().await.unwrap().is_empty());
    }
    with_store.shutdown().await.unwrap();
}

/// A unix socket's path may not exceed 107 bytes; a deep data directory must still work
/// (the server connects through a short link to the sandboxes directory).
#[tokio::test]
async fn a_deep_runtime_root_still_reaches_the_agent() {
    if !support::prerequisites() {
        return;
    }
    let base = tempfile::Builder::new()
        .prefix("kiln-rt-deep-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let deep = base
        .path()
        .join("a-rather-long-directory-name-for-data")
        .join("and-another-level-of-nesting-here");
    let mut config = kiln_runtime::local::LocalConfig::new(&deep, support::agent_binary());
    // The VM's budgets are below one default sandbox.
    config.memory_overcommit = 1000.0;
    config.disk_overcommit = 1000.0;
    let runtime = kiln_runtime::local::LocalRuntime::new(config).unwrap();
    let id = support::id("ses_01a208490a10719299a4679cb275f331");
    let long_socket = deep
        .join("sandboxes")
        .join(id.as_str())
        .join("run/agent.sock");
    assert!(
        long_socket.as_os_str().len() > 107,
        "the test must use a path over the limit"
    );
    let spec = LocalSpec::new(id.clone(), RootLayers::single(support::busybox_rootfs()));
    runtime
        .create_local(spec)
        .await
        .expect("create with a deep root");
    let done = runtime
        .exec(&id, kiln_protocol::ExecRequest::shell("echo deep"))
        .await
        .unwrap();
    assert_eq!(done.stdout.to_string_lossy(), "deep\n");
    runtime.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exit_tells_a_death_from_a_destroy() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let dies = rt.create_local(busybox_spec("exit-dies")).await.unwrap();
    let destroyed = rt
        .create_local(busybox_spec("exit-destroyed"))
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(5);
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(200),
            rt.wait_exit(&dies.id)
        )
        .await
        .is_err(),
        "a running sandbox has not exited"
    );

    // Killed from the host: its init ends, and with it the sandbox.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &rt.init_pid(&dies.id).unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(wait, rt.wait_exit(&dies.id))
        .await
        .expect("noticed")
        .unwrap();
    assert!(
        matches!(&exit, SandboxExit::Died { reason } if reason.contains("init")),
        "{exit:?}"
    );
    rt.destroy(&dies.id).await.unwrap();

    // Destroyed through the runtime: not a death, whoever was waiting.
    let (exit, gone) = tokio::join!(
        tokio::time::timeout(wait, rt.wait_exit(&destroyed.id)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            rt.destroy(&destroyed.id).await
        }
    );
    gone.unwrap();
    assert_eq!(exit.expect("noticed").unwrap(), SandboxExit::Destroyed);
    assert!(matches!(
        rt.wait_exit(&destroyed.id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

/// bwrap starts in a mount namespace of its own: no process of a sandbox (its bwrap
/// monitor included) holds another sandbox's mounts. bwrap reads the whole mount table
/// for each bind it makes, so those made a burst of creates quadratic (`launch_ns.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_start_without_each_others_mounts() {
    if !prerequisites() {
        return;
    }
    let rt = runtime();
    let first = rt.create_local(busybox_spec("ns1")).await.unwrap();
    let second = rt.create_local(busybox_spec("ns2")).await.unwrap();
    let first_dir = rt.sandbox_dir(&first.id).to_string_lossy().into_owned();
    let pids = rt.pids(&second.id).unwrap();
    assert!(pids.len() >= 2, "bwrap's monitor and the agent: {pids:?}");
    for pid in pids {
        let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        assert!(
            !table.contains(&first_dir),
            "pid {pid} of ns2 holds ns1's mounts:\n{table}"
        );
    }
    // The host still has them: teardown, reconcile and the socket find them there.
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(host.contains(&format!("{first_dir}/merged")), "{host}");
    for id in [&first.id, &second.id] {
        rt.destroy(id).await.unwrap();
    }
}

/// A workspace (an agent job's checkout) is seen at its target, writable, without the
/// server's paths in the sandbox's mountinfo (a bind mount's root field is the source's
/// path in its filesystem), and after destroy the host directory holds exactly the
/// sandbox's edits: with a disk limit (the workspace on the sandbox's disk) and without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_shows_no_host_path_and_keeps_its_edits() {
    if !prerequisites() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let rt = runtime();
    for (name, disk_bytes) in [("ws-disk", Some(64 << 20)), ("ws-plain", None)] {
        let dir = rt
            .root
            .path()
            .join("srv-data-7f3a/agent-jobs/job-q9z/workspace-tree");
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/keep.txt"), "old\n").unwrap();
        std::fs::write(dir.join("gone.txt"), "delete me\n").unwrap();
        std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::os::unix::fs::symlink("src/keep.txt", dir.join("link")).unwrap();

        let mut spec = busybox_spec(name);
        spec.limits.disk_bytes = disk_bytes;
        spec.binds = vec![kiln_runtime::local::BindMount {
            source: dir.clone(),
            target: "/workspace".into(),
        }];
        let handle = rt.create_local(spec).await.unwrap();
        let script = "cat /proc/self/mountinfo; echo ---; cat /workspace/link; \
                      stat -c %a /workspace/run.sh; echo new >> /workspace/src/keep.txt; \
                      echo fresh > /workspace/new.txt; rm /workspace/gone.txt; \
                      cp /bin/busybox /workspace/suid && chmod 6755 /workspace/suid";
        let done = rt
            .exec(&handle.id, ExecRequest::shell(script))
            .await
            .unwrap();
        let out = done.stdout.to_string_lossy();
        assert_eq!(done.exit_code, 0, "{out} {}", done.stderr.to_string_lossy());
        let (mountinfo, rest) = out.split_once("---\n").unwrap();
        assert!(
            mountinfo.contains(" /workspace "),
            "no workspace mount:\n{mountinfo}"
        );
        for host_path in ["srv-data-7f3a", "agent-jobs", "workspace-tree"] {
            assert!(
                !mountinfo.contains(host_path),
                "{name}: the sandbox sees {host_path}:\n{mountinfo}"
            );
        }
        let root = rt.root.path().to_string_lossy().into_owned();
        assert!(!mountinfo.contains(&root), "{name}:\n{mountinfo}");
        assert_eq!(rest, "old\n750\n", "{name}");

        let sandbox_dir = rt.sandbox_dir(&handle.id);
        rt.destroy(&handle.id).await.unwrap();
        assert!(mounted_under(&sandbox_dir).is_empty(), "{name}");
        assert_eq!(
            std::fs::read_to_string(dir.join("src/keep.txt")).unwrap(),
            "old\nnew\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("new.txt")).unwrap(),
            "fresh\n"
        );
        assert!(
            !dir.join("gone.txt").exists(),
            "{name}: a deletion was lost"
        );
        let suid = std::fs::metadata(dir.join("suid"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            suid & 0o7777,
            0o755,
            "{name}: setuid/setgid came back to the host"
        );
        assert_eq!(
            std::fs::read_link(dir.join("link")).unwrap(),
            std::path::Path::new("src/keep.txt")
        );
        let mode = std::fs::metadata(dir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        std::fs::remove_dir_all(rt.root.path().join("srv-data-7f3a")).unwrap();
    }
}

/// The cgroup2 mount's per-mount and superblock options (`None`: no cgroup2 mount).
fn cgroup2_options() -> Option<(String, Vec<String>)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        (right.next()? == "cgroup2").then(|| {
            let mount = left
                .split_whitespace()
                .nth(5)
                .unwrap_or_default()
                .to_string();
            let sb = right.nth(1).unwrap_or_default();
            (mount, sb.split(',').map(str::to_string).collect())
        })
    })
}

/// The first start sets `favordynmods` on the cgroup2 mount (moving bubblewrap into the
/// sandbox's cgroup then does not wait for an RCU grace period), keeping the mount's other
/// flags and options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_sets_favordynmods_and_keeps_the_other_mount_options() {
    use kiln_runtime::local::cgroup::favor_dynmods;
    if !prerequisites() {
        return;
    }
    let Some((mount_before, super_before)) = cgroup2_options() else {
        eprintln!("skipped: no cgroup2 mount here");
        return;
    };
    // Off first (another test's runtime may have set it), so that this one must set it.
    assert!(!matches!(
        favor_dynmods::set(false),
        favor_dynmods::FavorDynmods::Refused(..)
    ));
    let rt = runtime();
    let h = rt.create_local(busybox_spec("dynmods1")).await.unwrap();
    let (mount_after, super_after) = cgroup2_options().unwrap();
    assert_eq!(favor_dynmods::is_on(), Some(true), "{super_after:?}");
    assert_eq!(mount_after, mount_before, "the per-mount flags changed");
    for option in super_before.iter().filter(|o| *o != "favordynmods") {
        assert!(
            super_after.contains(option),
            "{option} lost: {super_after:?}"
        );
    }
    rt.destroy(&h.id).await.unwrap();
}
