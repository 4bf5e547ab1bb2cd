//! Layer unpacking: whiteouts, opaque dirs, metadata, and rejection of hostile tars.
//! Runs as root (device nodes, chown, trusted.* xattrs).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_image::{unpack_layer, ImageError, UnpackStats, OVERLAY_OPAQUE_XATTR};
use support::{layer_tar, Entry};

fn unpack(entries: &[Entry<'_>]) -> (tempfile::TempDir, Result<UnpackStats, ImageError>) {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer_tar(entries);
    let result = unpack_layer(&tar[..], dir.path());
    (dir, result)
}

fn is_overlay_whiteout(path: &Path) -> bool {
    let m = fs::symlink_metadata(path).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}

#[test]
fn whiteouts_become_overlay_char_devices() {
    let (dir, stats) = unpack(&[
        Entry::Dir("etc/", 0o755),
        Entry::File("etc/.wh.passwd", b"", 0o644),
        Entry::File("./.wh.tmp", b"", 0o644),
        Entry::File("etc/hostname", b"box\n", 0o644),
    ]);
    let stats = stats.unwrap();
    assert_eq!(stats.whiteouts, 2);
    assert!(is_overlay_whiteout(&dir.path().join("etc/passwd")));
    assert!(is_overlay_whiteout(&dir.path().join("tmp")));
    assert!(!dir.path().join("etc/.wh.passwd").exists());
    assert_eq!(fs::read(dir.path().join("etc/hostname")).unwrap(), b"box\n");
}

#[test]
fn opaque_marker_sets_overlay_xattr_and_is_not_materialised() {
    let (dir, stats) = unpack(&[
        Entry::Dir("var/", 0o755),
        Entry::Dir("var/cache/", 0o755),
        Entry::File("var/cache/.wh..wh..opq", b"", 0o644),
        Entry::File("var/cache/fresh", b"new", 0o644),
        // The marker may come without its directory entry.
        Entry::File("opt/app/.wh..wh..opq", b"", 0o644),
    ]);
    assert_eq!(stats.unwrap().opaque_dirs, 2);
    for d in ["var/cache", "opt/app"] {
        let v = xattr::get(dir.path().join(d), OVERLAY_OPAQUE_XATTR).unwrap();
        assert_eq!(v.as_deref(), Some(&b"y"[..]), "{d}");
    }
    assert!(xattr::get(dir.path().join("var"), OVERLAY_OPAQUE_XATTR)
        .unwrap()
        .is_none());
    assert!(!dir.path().join("var/cache/.wh..wh..opq").exists());
    assert_eq!(
        fs::read(dir.path().join("var/cache/fresh")).unwrap(),
        b"new"
    );
}

#[test]
fn same_layer_entry_wins_over_its_whiteout() {
    // OCI: a whiteout only hides lower layers, in whichever order the tar lists them.
    let (dir, r) = unpack(&[
        Entry::File(".wh.a", b"", 0o644),
        Entry::File("a", b"kept", 0o644),
        Entry::File("b", b"kept", 0o644),
        Entry::File(".wh.b", b"", 0o644),
        Entry::File(".wh.c", b"", 0o644),
        Entry::File("c/inner", b"dir replaces whiteout", 0o644),
    ]);
    r.unwrap();
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"kept");
    assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"kept");
    assert!(dir.path().join("c").is_dir());
}

#[test]
fn layer_cannot_forge_overlay_xattrs() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ("SCHILY.xattr.user.kiln", &b"ok"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1);
    b.append_data(&mut h, "d/", &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], dir.path()).unwrap();
    assert!(xattr::get(dir.path().join("d"), OVERLAY_OPAQUE_XATTR)
        .unwrap()
        .is_none());
    assert_eq!(
        xattr::get(dir.path().join("d"), "user.kiln")
            .unwrap()
            .as_deref(),
        Some(&b"ok"[..])
    );
}

#[test]
fn preserves_modes_owners_mtimes_links_and_fifos() {
    let (dir, r) = unpack(&[
        Entry::Dir("bin/", 0o755),
        Entry::Owned("bin/tool", b"#!/bin/sh\n", 0o4755, 0, 0, 1_500_000_000),
        Entry::Owned("home/u/notes", b"hi", 0o600, 1234, 2345, 1_400_000_000),
        Entry::Symlink("bin/sh", "/bin/busybox"),
        Entry::Symlink("home/u/rel", "../../etc/outside"),
        Entry::Hardlink("bin/tool2", "bin/tool"),
        Entry::Fifo("run/fifo"),
        Entry::Dir("data/", 0o700),
        Entry::File("data/x", b"x", 0o640),
    ]);
    r.unwrap();
    let p = dir.path();
    let tool = fs::metadata(p.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(tool.mtime(), 1_500_000_000);
    let notes = fs::metadata(p.join("home/u/notes")).unwrap();
    assert_eq!((notes.uid(), notes.gid()), (1234, 2345));
    assert_eq!(notes.permissions().mode() & 0o777, 0o600);
    assert_eq!(notes.mtime(), 1_400_000_000);
    // Symlink targets are stored verbatim, even absolute or climbing ones: they resolve
    // inside the sandbox root, never on the host.
    assert_eq!(
        fs::read_link(p.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(p.join("home/u/rel")).unwrap(),
        Path::new("../../etc/outside")
    );
    assert_eq!(
        fs::metadata(p.join("bin/tool2")).unwrap().ino(),
        tool.ino(),
        "hard link"
    );
    assert!(fs::symlink_metadata(p.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let data = fs::metadata(p.join("data")).unwrap();
    assert_eq!(data.permissions().mode() & 0o777, 0o700);
    // Directory times are applied after their contents are written.
    assert_eq!(data.mtime(), 1_600_000_000);
}

fn assert_unsafe(entries: &[Entry<'_>], outside: &Path) {
    let (_dir, r) = unpack(entries);
    match r {
        Err(ImageError::UnsafePath { .. }) => {}
        other => panic!("expected UnsafePath, got {other:?}"),
    }
    assert!(!outside.exists(), "{} was written", outside.display());
}

#[test]
fn rejects_parent_dir_components() {
    let victim = tempfile::tempdir().unwrap();
    let name = victim
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    // The layer dir and `victim` are both under the temp root, so `../<victim>/x` would land
    // inside `victim` if `..` were followed.
    let path = format!("../{name}/escaped");
    assert_unsafe(
        &[Entry::File(&path, b"x", 0o644)],
        &victim.path().join("escaped"),
    );
    assert_unsafe(
        &[Entry::File("a/../../escaped", b"x", 0o644)],
        &victim.path().join("escaped"),
    );
}

#[test]
fn rejects_absolute_paths() {
    let victim = tempfile::tempdir().unwrap();
    let target = victim.path().join("abs");
    assert_unsafe(
        &[Entry::File(target.to_str().unwrap(), b"x", 0o644)],
        &target,
    );
}

#[test]
fn rejects_writing_through_a_symlink() {
    let victim = tempfile::tempdir().unwrap();
    let link_target = victim.path().to_str().unwrap().to_owned();
    assert_unsafe(
        &[
            Entry::Symlink("evil", &link_target),
            Entry::File("evil/pwned", b"x", 0o644),
        ],
        &victim.path().join("pwned"),
    );
    // Same with a relative link climbing out.
    assert_unsafe(
        &[
            Entry::Symlink("up", ".."),
            Entry::File("up/pwned2", b"x", 0o644),
        ],
        &victim.path().join("pwned2"),
    );
}

#[test]
fn rejects_hard_links_to_outside_or_missing_files() {
    let victim = tempfile::tempdir().unwrap();
    let secret = victim.path().join("secret");
    fs::write(&secret, b"host secret").unwrap();
    let (dir, r) = unpack(&[Entry::Hardlink("stolen", secret.to_str().unwrap())]);
    assert!(matches!(r, Err(ImageError::UnsafePath { .. })), "{r:?}");
    assert!(!dir.path().join("stolen").exists());
    let (_d, r) = unpack(&[Entry::Hardlink("stolen", "../secret")]);
    assert!(matches!(r, Err(ImageError::UnsafePath { .. })), "{r:?}");
    let (_d, r) = unpack(&[
        Entry::Symlink("l", "/"),
        Entry::Hardlink("stolen", "l/etc/passwd"),
    ]);
    assert!(matches!(r, Err(ImageError::UnsafePath { .. })), "{r:?}");
    assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn rejects_whiteout_of_parent() {
    let (_d, r) = unpack(&[Entry::File("a/.wh...", b"", 0o644)]);
    assert!(matches!(r, Err(ImageError::UnsafePath { .. })), "{r:?}");
}

#[test]
fn garbage_is_a_tar_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let r = unpack_layer(
        &b"this is not a tar file at all, just bytes"[..],
        dir.path(),
    );
    assert!(r.is_err());
}
