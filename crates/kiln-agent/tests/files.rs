//! File requests against the real agent: atomic writes, reads, listings, str_replace.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::AgentProcess;
use kiln_protocol::{Binary, ErrorCode, FileKind, WriteFileRequest};

fn write_req(
    path: &str,
    content: &str,
    mode: Option<u32>,
    create_parents: bool,
) -> WriteFileRequest {
    WriteFileRequest {
        path: path.to_string(),
        content: Binary::from(content),
        mode,
        create_parents,
    }
}

fn mode_of(path: &str) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn write_is_atomic_with_mode_and_parents() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let path = agent.path("a/b/run.sh");
    let err = client
        .write_file(write_req(&path, "#!/bin/sh\n", Some(0o755), false))
        .unwrap_err();
    assert_eq!(
        err.agent_error().unwrap().code,
        ErrorCode::NotFound,
        "{err}"
    );
    assert!(err.to_string().contains("parent directory"), "{err}");

    let size = client
        .write_file(write_req(&path, "#!/bin/sh\necho hi\n", Some(0o755), true))
        .unwrap();
    assert_eq!(size, 18);
    assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\necho hi\n");
    assert_eq!(mode_of(&path), 0o755, "mode applied exactly, umask ignored");

    // Overwrite without a mode keeps the existing mode; no temp files are left behind.
    client
        .write_file(write_req(&path, "v2", None, false))
        .unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), "v2");
    assert_eq!(mode_of(&path), 0o755);
    let names: Vec<_> = fs::read_dir(agent.path("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["run.sh"]);

    // The rename swaps the inode: a reader holding the old file keeps the old content.
    let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
    client
        .write_file(write_req(&path, "v3", None, false))
        .unwrap();
    let new_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
    assert_ne!(
        old_inode, new_inode,
        "written through a rename, not in place"
    );

    let new_file = agent.path("plain.txt");
    client
        .write_file(write_req(&new_file, "x", None, false))
        .unwrap();
    assert_eq!(mode_of(&new_file), 0o644);

    let err = client
        .write_file(write_req(&agent.path("a"), "x", None, false))
        .unwrap_err();
    assert_eq!(err.agent_error().unwrap().code, ErrorCode::IsDirectory);
}

#[test]
fn write_through_a_symlink_replaces_the_target() {
    let agent = AgentProcess::start();
    let target = agent.path("target.txt");
    let link = agent.path("link.txt");
    fs::write(&target, "old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    agent
        .client()
        .write_file(write_req(&link, "new", None, false))
        .unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&target).unwrap(), "new");
}

#[test]
fn read_list_and_stat() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let file = agent.path("data.bin");
    fs::write(&file, [0u8, 1, 2, 255, 4, 5]).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let read = client.read_file(&file, None).unwrap();
    assert_eq!(read.content.as_bytes(), &[0u8, 1, 2, 255, 4, 5]);
    assert_eq!((read.size, read.mode, read.truncated), (6, 0o640, false));
    let head = client.read_file(&file, Some(4)).unwrap();
    assert_eq!(head.content.as_bytes(), &[0u8, 1, 2, 255]);
    assert_eq!((head.size, head.truncated), (6, true));

    let err = client.read_file(agent.path("missing"), None).unwrap_err();
    assert_eq!(err.agent_error().unwrap().code, ErrorCode::NotFound);
    let err = client
        .read_file(agent.dir.path().to_str().unwrap(), None)
        .unwrap_err();
    assert_eq!(err.agent_error().unwrap().code, ErrorCode::IsDirectory);

    fs::create_dir(agent.path("sub")).unwrap();
    std::os::unix::fs::symlink("data.bin", agent.path("zlink")).unwrap();
    let listing = client.list_dir(agent.dir.path().to_str().unwrap()).unwrap();
    let summary: Vec<(String, FileKind)> = listing
        .entries
        .iter()
        .map(|e| (e.name.clone(), e.kind))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("agent.sock".to_string(), FileKind::Other),
            ("data.bin".to_string(), FileKind::File),
            ("sub".to_string(), FileKind::Dir),
            ("zlink".to_string(), FileKind::Symlink),
        ]
    );
    assert_eq!(listing.entries[1].size, 6);
    assert_eq!(listing.entries[1].mode, 0o640);
    assert!(!listing.truncated);
    let err = client.list_dir(&file).unwrap_err();
    assert_eq!(err.agent_error().unwrap().code, ErrorCode::NotADirectory);

    let meta = client.stat(&file).unwrap();
    assert_eq!(
        (meta.kind, meta.size, meta.mode),
        (FileKind::File, 6, 0o640)
    );
    assert!(meta.modified_ms > 1_600_000_000_000);
}

#[test]
fn str_replace_zero_one_and_many_matches() {
    let agent = AgentProcess::start();
    let client = agent.client();
    let path = agent.path("mod.py");
    let original = "def f():\n    return 1\n\ndef g():\n    return 1\n";
    fs::write(&path, original).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

    let err = client
        .str_replace(&path, "return 2", "return 3")
        .unwrap_err();
    let agent_err = err.agent_error().unwrap();
    assert_eq!(agent_err.code, ErrorCode::NoMatch);
    assert_eq!(
        agent_err.message,
        format!(
            "No replacement was performed, old_str `return 2` did not appear verbatim in {path}."
        )
    );

    let err = client
        .str_replace(&path, "return 1", "return 2")
        .unwrap_err();
    let agent_err = err.agent_error().unwrap();
    assert_eq!(
        agent_err.code,
        ErrorCode::MultipleMatches {
            count: 2,
            lines: vec![2, 5]
        }
    );
    assert_eq!(
        agent_err.message,
        "No replacement was performed. Multiple occurrences of old_str `return 1` in lines [2, 5]. Please ensure it is unique"
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        original,
        "untouched on failure"
    );

    let replaced = client
        .str_replace(&path, "def g():\n    return 1", "def g():\n    return 2")
        .unwrap();
    assert_eq!(replaced.line, 4);
    assert_eq!(replaced.snippet_start_line, 1);
    assert!(
        replaced.snippet.contains("    return 2"),
        "{}",
        replaced.snippet
    );
    let now = fs::read_to_string(&path).unwrap();
    assert_eq!(now, "def f():\n    return 1\n\ndef g():\n    return 2\n");
    assert_eq!(replaced.size, now.len() as u64);
    assert_eq!(mode_of(&path), 0o600, "mode preserved");
}
