//! Reading, listing and inspecting files, with OS errors mapped to protocol codes.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::time::UNIX_EPOCH;

use kiln_protocol::{
    AgentError, Binary, DirEntry, DirListing, ErrorCode, FileContent, FileKind, Metadata,
    MAX_DIR_ENTRIES, MAX_FILE_BYTES,
};

/// Maps an OS error on `path` to a protocol error whose message names the operation.
pub fn io_error(op: &str, path: &str, err: &io::Error) -> AgentError {
    let code = match err.kind() {
        io::ErrorKind::NotFound => ErrorCode::NotFound,
        io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        io::ErrorKind::IsADirectory => ErrorCode::IsDirectory,
        io::ErrorKind::NotADirectory => ErrorCode::NotADirectory,
        _ => ErrorCode::Io,
    };
    AgentError::new(code, format!("cannot {op} {path}: {err}"))
}

/// Permission bits of a mode.
pub fn permission_bits(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

fn kind_of(file_type: fs::FileType) -> FileKind {
    if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Dir
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// `min(max_bytes, MAX_FILE_BYTES)` bytes of a file from byte `offset` on.
pub fn read_file(
    path: &str,
    offset: u64,
    max_bytes: Option<u64>,
) -> Result<FileContent, AgentError> {
    let cap = max_bytes.unwrap_or(MAX_FILE_BYTES).min(MAX_FILE_BYTES);
    // Non-blocking open: opening a FIFO nobody writes to would otherwise wait forever
    // (holding a connection); it is refused below instead. No effect on regular files.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|err| io_error("read", path, &err))?;
    let meta = file
        .metadata()
        .map_err(|err| io_error("read", path, &err))?;
    if meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::IsDirectory,
            format!("{path} is a directory"),
        ));
    }
    refuse_special(path, &meta)?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset))
            .map_err(|err| io_error("read", path, &err))?;
    }
    // One byte past the cap tells "exactly cap" from "more", even for files whose
    // reported size is 0 (/proc).
    let mut content = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut content)
        .map_err(|err| io_error("read", path, &err))?;
    let truncated = content.len() as u64 > cap;
    content.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    Ok(FileContent {
        size: meta.len().max(offset.saturating_add(content.len() as u64)),
        mode: permission_bits(&meta),
        content: Binary(content),
        truncated,
    })
}

/// FIFOs and sockets are not files one can read to an end: a read could wait forever.
/// (Character devices are allowed: `/dev/null`, `/dev/urandom` end or are capped.)
pub fn refuse_special(path: &str, meta: &fs::Metadata) -> Result<(), AgentError> {
    let file_type = meta.file_type();
    let kind = if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        return Ok(());
    };
    Err(AgentError::new(
        ErrorCode::InvalidRequest,
        format!("{path} is {kind}, not a regular file"),
    ))
}

/// A directory's entries, sorted by name, symlinks not followed.
pub fn list_dir(path: &str) -> Result<DirListing, AgentError> {
    let meta = fs::metadata(path).map_err(|err| io_error("list", path, &err))?;
    if !meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::NotADirectory,
            format!("{path} is not a directory"),
        ));
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(|err| io_error("list", path, &err))? {
        let entry = entry.map_err(|err| io_error("list", path, &err))?;
        // An entry deleted between readdir and lstat is just skipped.
        let Ok(meta) = fs::symlink_metadata(entry.path()) else {
            continue;
        };
        entries.push(DirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            kind: kind_of(meta.file_type()),
            size: meta.len(),
            mode: permission_bits(&meta),
            modified_ms: modified_ms(&meta),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > MAX_DIR_ENTRIES;
    entries.truncate(MAX_DIR_ENTRIES);
    Ok(DirListing { entries, truncated })
}

/// Metadata of a path, symlinks not followed.
pub fn stat(path: &str) -> Result<Metadata, AgentError> {
    let meta = fs::symlink_metadata(path).map_err(|err| io_error("stat", path, &err))?;
    Ok(Metadata {
        kind: kind_of(meta.file_type()),
        size: meta.len(),
        mode: permission_bits(&meta),
        modified_ms: modified_ms(&meta),
    })
}

/// Modification time in milliseconds since the Unix epoch (negative before it; 0 when
/// the filesystem has none).
fn modified_ms(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).ok(),
            Err(before) => i64::try_from(before.duration().as_millis())
                .ok()
                .map(|ms| -ms),
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_read_starts_at_its_offset_and_says_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let bytes: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        fs::write(&path, &bytes).unwrap();
        let path = path.to_str().unwrap();

        let middle = read_file(path, 100, Some(50)).unwrap();
        assert_eq!(middle.content.as_bytes(), &bytes[100..150]);
        assert_eq!(middle.size, 1000);
        assert!(middle.truncated);

        let tail = read_file(path, 990, Some(50)).unwrap();
        assert_eq!(tail.content.as_bytes(), &bytes[990..]);
        assert!(!tail.truncated);

        let past = read_file(path, 5000, None).unwrap();
        assert!(past.content.is_empty());
        assert!(!past.truncated);
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // A hang (the old blocking open) becomes a failure instead of a stuck test run.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.to_str().unwrap().to_string();
        std::thread::spawn(move || tx.send(read_file(&path, 0, None)));
        let answer = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("read_file of a FIFO must answer, not wait for a writer");
        let err = answer.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.message.contains("FIFO"), "{}", err.message);
    }

    #[test]
    fn listed_entries_carry_their_modification_time() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "x").unwrap();
        let listing = list_dir(dir.path().to_str().unwrap()).unwrap();
        let entry = &listing.entries[0];
        assert_eq!(entry.name, "a");
        let stat = stat(dir.path().join("a").to_str().unwrap()).unwrap();
        assert_eq!(entry.modified_ms, stat.modified_ms);
        assert!(entry.modified_ms > 0);
    }
}
