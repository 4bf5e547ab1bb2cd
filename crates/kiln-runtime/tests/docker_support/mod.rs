//! Set-up for the Docker backend's tests: the private engine, a busybox image in it, and
//! a runtime with its own label prefix (so tests running at once never reconcile each
//! other's containers away).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use kiln_runtime::docker::{DockerRuntime, DockerSettings};

/// A busybox image imported (`docker import`) into the test engine under this name.
pub const BUSYBOX: &str = "kiln-test/busybox:1";

/// The engine, or `None` (skip) when it cannot start here.
pub fn host() -> Option<String> {
    kiln_test_support::docker::docker_host()
}

/// A runtime on `host` whose containers are labelled `<prefix>.sandbox`.
pub fn runtime(host: &str, prefix: &str, root: &Path) -> DockerRuntime {
    let mut settings = DockerSettings::new(kiln_test_support::agent_binary(), root);
    settings.host = Some(host.to_string());
    settings.label_prefix = prefix.to_string();
    settings.start_timeout = Duration::from_secs(20);
    DockerRuntime::new(settings).expect("docker runtime")
}

/// Imports a busybox root (with `/testbed/hello.txt`) as [`BUSYBOX`], once per engine.
pub async fn ensure_busybox(runtime: &DockerRuntime) {
    runtime.negotiate().await.expect("engine answers");
    let engine = runtime.engine();
    if engine.inspect_image(BUSYBOX).await.is_ok() {
        return;
    }
    let tar = busybox_rootfs_tar();
    let (repo, tag) = BUSYBOX.split_once(':').expect("tag");
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    let mut progress =
        engine.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(step) = progress.next().await {
        step.expect("docker import of busybox");
    }
}

fn busybox_rootfs_tar() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = |name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, name, std::io::empty())
            .expect("dir");
    };
    for d in ["bin", "etc", "tmp", "root", "proc", "dev", "sys", "testbed"] {
        dir(d);
    }
    let mut add = |name: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, name, data).expect("file");
    };
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
    add("bin/busybox", 0o755, &busybox);
    add("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    add("testbed/hello.txt", 0o644, b"hello from the image\n");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .expect("symlink");
    }
    tar.into_inner().expect("tar")
}
