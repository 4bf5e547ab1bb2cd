//! Files of an instance: read (whole or a byte range), write, edit (`str_replace` and
//! line ranges), list (to a depth) and stat. Every operation is one request to the agent
//! inside the sandbox, which resolves paths in the sandbox's own mount namespace: `..`,
//! symlinks (absolute ones included) and `/proc/*/root` all resolve inside the sandbox,
//! so no path can name a file of the host. What this module adds is the caller's limits
//! and the mapping of the agent's answers to service errors.
use std::collections::VecDeque;

use kiln_config::FilesConfig;
use kiln_protocol::{EditLinesRequest, ErrorCode, FileKind, WriteFileRequest, MAX_FILE_BYTES};
use kiln_runtime::RuntimeError;

use super::{InstanceSandbox, InstanceService};
use crate::error::{ServiceError, ServiceResult};
use crate::sessions::sandbox_path;

/// Longest path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Which bytes of a file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRange {
    /// From `offset` on: `length` bytes, or to the end when `None`.
    From { offset: u64, length: Option<u64> },
    /// The last `n` bytes (HTTP's `bytes=-n`).
    Last(u64),
}

/// Bytes read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBytes {
    /// The path as resolved in the sandbox.
    pub path: String,
    /// Where `content` starts in the file.
    pub offset: u64,
    pub content: Vec<u8>,
    /// Size of the whole file.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// The file goes on after `content`.
    pub truncated: bool,
}

/// A file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWrite {
    pub path: String,
    pub content: Vec<u8>,
    /// Permission bits; the existing file's (or 0644) when `None`.
    pub mode: Option<u32>,
    pub create_parents: bool,
}

/// An edit of a file in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEdit {
    /// `old` must occur exactly once, verbatim (SWE-agent's `str_replace`).
    Replace { old: String, new: String },
    /// Lines `start_line..=end_line` (1-based) become `new_text`; `end_line =
    /// start_line - 1` inserts.
    Lines {
        start_line: u64,
        end_line: u64,
        new_text: String,
    },
}

/// What an edit did: `success` false (with the reason in `message`) when `str_replace`
/// found its text zero or several times, as Codeset's `str_replace` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOutcome {
    pub path: String,
    pub success: bool,
    pub message: String,
    /// First line of the edit, new size, and a few lines around it, when it succeeded.
    pub line: Option<u64>,
    pub size: Option<u64>,
    pub snippet: Option<String>,
    pub snippet_start_line: Option<u64>,
}

/// What kind of file an entry is (symlinks not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file found by a listing, or a stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    /// Modification time, milliseconds since the Unix epoch.
    pub modified_ms: i64,
}

/// A directory's entries to some depth, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
    /// More entries exist than returned (the entry cap, or a directory too large for one
    /// agent listing).
    pub truncated: bool,
}

/// The sandbox path a caller's path names: relative paths start at the instance's
/// working directory (`/testbed`). Empty paths, NUL bytes and paths longer than
/// [`MAX_PATH_BYTES`] are refused (field `path`).
pub fn instance_path(path: &str) -> ServiceResult<String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES || path.contains('\0') {
        return Err(ServiceError::invalid(
            &["path"],
            format!("a file path of 1 to {MAX_PATH_BYTES} bytes without NUL is required"),
            "value_error",
        ));
    }
    let resolved = sandbox_path(path);
    // `.` (the working directory itself) without a trailing `/.` in the paths listed.
    Ok(match resolved.strip_suffix("/.") {
        Some("") => "/".to_string(),
        Some(dir) => dir.to_string(),
        None => resolved,
    })
}

impl InstanceService {
    /// Bytes of a file in `user_id`'s instance: the whole file, or a range of it. A read
    /// is at most `limits.max_read_bytes`; a whole file larger than that is refused
    /// (field `length`), saying to ask for a range.
    pub async fn read_file(
        &self,
        limits: &FilesConfig,
        user_id: &str,
        instance_id: &str,
        path: &str,
        range: ReadRange,
    ) -> ServiceResult<FileBytes> {
        let path = instance_path(path)?;
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let (offset, length) = match range {
            ReadRange::From { offset, length } => (offset, length),
            ReadRange::Last(n) => {
                let size = read_chunk(&sandbox, &path, 0, 0).await?.size;
                (size.saturating_sub(n), Some(n.min(size)))
            }
        };
        if let Some(length) = length.filter(|&l| l > limits.max_read_bytes) {
            return Err(ServiceError::invalid(
                &["length"],
                format!(
                    "{length} bytes is more than one read returns ({}); read in smaller ranges",
                    limits.max_read_bytes
                ),
                "less_than_equal",
            ));
        }
        let want = length.unwrap_or(limits.max_read_bytes);
        let mut content = Vec::new();
        let (size, mode, more) = loop {
            let asked = (want - content.len() as u64).min(MAX_FILE_BYTES);
            let at = offset.saturating_add(content.len() as u64);
            let chunk = read_chunk(&sandbox, &path, at, asked).await?;
            content.extend_from_slice(chunk.content.as_bytes());
            if !chunk.truncated || content.len() as u64 >= want || chunk.content.is_empty() {
                break (chunk.size, chunk.mode, chunk.truncated);
            }
        };
        if length.is_none() && more {
            return Err(ServiceError::invalid(
                &["length"],
                format!(
                    "{path} is {size} bytes from offset {offset}, more than one read returns ({}): \
                     ask for a range (offset and length, or a Range header)",
                    limits.max_read_bytes
                ),
                "too_large",
            ));
        }
        Ok(FileBytes {
            path,
            offset,
            content,
            size,
            mode,
            truncated: more,
        })
    }

    /// Replaces a file atomically (readers see the old content or the new, never a mix);
    /// returns the bytes written. Size limits are the caller's (the HTTP edge answers 413).
    pub async fn write_file(
        &self,
        user_id: &str,
        instance_id: &str,
        write: FileWrite,
    ) -> ServiceResult<(String, u64)> {
        let path = instance_path(&write.path)?;
        if let Some(mode) = write.mode.filter(|&m| m > 0o7777) {
            return Err(ServiceError::invalid(
                &["mode"],
                format!("mode {mode:o} has bits beyond 7777"),
                "less_than_equal",
            ));
        }
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let request = WriteFileRequest {
            path: path.clone(),
            content: write.content.into(),
            mode: write.mode,
            create_parents: write.create_parents,
        };
        let size = sandbox
            .runtime
            .write_file(&sandbox.id, request)
            .await
            .map_err(|e| file_error(e, &path))?;
        Ok((path, size))
    }

    /// Edits a file in place, atomically, inside the sandbox.
    pub async fn edit_file(
        &self,
        user_id: &str,
        instance_id: &str,
        path: &str,
        edit: FileEdit,
    ) -> ServiceResult<EditOutcome> {
        let path = instance_path(path)?;
        if let FileEdit::Replace { old, .. } = &edit {
            if old.is_empty() {
                return Err(ServiceError::invalid(
                    &["old_str"],
                    "String should have at least 1 character",
                    "string_too_short",
                ));
            }
        }
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let done = match edit {
            FileEdit::Replace { old, new } => {
                sandbox
                    .runtime
                    .str_replace(&sandbox.id, &path, &old, &new)
                    .await
            }
            FileEdit::Lines {
                start_line,
                end_line,
                new_text,
            } => {
                let request = EditLinesRequest {
                    path: path.clone(),
                    start_line,
                    end_line,
                    new_text,
                };
                sandbox.runtime.edit_lines(&sandbox.id, request).await
            }
        };
        match done {
            Ok(replaced) => Ok(EditOutcome {
                message: format!("The file {path} has been edited (line {}).", replaced.line),
                path,
                success: true,
                line: Some(replaced.line),
                size: Some(replaced.size),
                snippet: Some(replaced.snippet),
                snippet_start_line: Some(replaced.snippet_start_line),
            }),
            Err(e) => match e.agent_error() {
                Some(agent)
                    if matches!(
                        agent.code,
                        ErrorCode::NoMatch | ErrorCode::MultipleMatches { .. }
                    ) =>
                {
                    Ok(EditOutcome {
                        path,
                        success: false,
                        message: agent.message.clone(),
                        line: None,
                        size: None,
                        snippet: None,
                        snippet_start_line: None,
                    })
                }
                _ => Err(file_error(e, &path)),
            },
        }
    }

    /// The entries under a directory, `depth` levels down (1: its own entries), sorted by
    /// path, at most `limits.max_list_entries`. Symlinks are listed, never followed.
    pub async fn list_files(
        &self,
        limits: &FilesConfig,
        user_id: &str,
        instance_id: &str,
        path: &str,
        depth: u32,
    ) -> ServiceResult<FileListing> {
        let root = instance_path(path)?;
        if depth == 0 || depth > limits.max_list_depth {
            return Err(ServiceError::invalid(
                &["depth"],
                format!("Input should be between 1 and {}", limits.max_list_depth),
                "less_than_equal",
            ));
        }
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let mut entries = Vec::new();
        let mut truncated = false;
        let mut pending = VecDeque::from([(root.clone(), 1u32)]);
        while let Some((dir, level)) = pending.pop_front() {
            let listing = match sandbox.runtime.list_dir(&sandbox.id, &dir).await {
                Ok(listing) => listing,
                // A directory removed (or made unreadable) while walking is skipped;
                // only the root must be listable.
                Err(e) if dir != root && e.agent_error().is_some() => continue,
                Err(e) => return Err(file_error(e, &dir)),
            };
            truncated |= listing.truncated;
            for entry in listing.entries {
                if entries.len() >= limits.max_list_entries {
                    truncated = true;
                    break;
                }
                let child = join(&dir, &entry.name);
                if entry.kind == FileKind::Dir && level < depth {
                    pending.push_back((child.clone(), level + 1));
                }
                entries.push(FileEntry {
                    name: entry.name,
                    path: child,
                    kind: entry_kind(entry.kind),
                    size: entry.size,
                    mode: entry.mode,
                    modified_ms: entry.modified_ms,
                });
            }
            if entries.len() >= limits.max_list_entries && !pending.is_empty() {
                truncated = true;
                break;
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(FileListing {
            path: root,
            entries,
            truncated,
        })
    }

    /// Metadata of one path (a symlink itself, not its target).
    pub async fn stat_file(
        &self,
        user_id: &str,
        instance_id: &str,
        path: &str,
    ) -> ServiceResult<FileEntry> {
        let path = instance_path(path)?;
        let sandbox = self.sandbox(user_id, instance_id).await?;
        let meta = sandbox
            .runtime
            .stat(&sandbox.id, &path)
            .await
            .map_err(|e| file_error(e, &path))?;
        Ok(FileEntry {
            name: path.rsplit('/').next().unwrap_or_default().to_string(),
            path,
            kind: entry_kind(meta.kind),
            size: meta.size,
            mode: meta.mode,
            modified_ms: meta.modified_ms,
        })
    }
}

async fn read_chunk(
    sandbox: &InstanceSandbox,
    path: &str,
    offset: u64,
    max_bytes: u64,
) -> ServiceResult<kiln_protocol::FileContent> {
    sandbox
        .runtime
        .read_file_at(&sandbox.id, path, offset, Some(max_bytes))
        .await
        .map_err(|e| file_error(e, path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn entry_kind(kind: FileKind) -> EntryKind {
    match kind {
        FileKind::File => EntryKind::File,
        FileKind::Dir => EntryKind::Dir,
        FileKind::Symlink => EntryKind::Symlink,
        FileKind::Other => EntryKind::Other,
    }
}

/// What the agent said about a path, as the caller's error: a missing file is "not
/// found", a refused one forbidden, anything else about the request a 422 on `path`
/// (on the line numbers for a line range outside the file). Failures that are not the
/// caller's (the agent unreachable) are internal.
fn file_error(e: RuntimeError, path: &str) -> ServiceError {
    let Some(agent) = e.agent_error() else {
        return match e {
            RuntimeError::NotFound(_) => {
                ServiceError::Conflict("the instance has no running sandbox any more".into())
            }
            RuntimeError::Unsupported { what } => ServiceError::Unavailable(format!(
                "this server's sandbox backend does not support {what}"
            )),
            other => ServiceError::Internal(other.to_string()),
        };
    };
    let message = agent.message.clone();
    match &agent.code {
        ErrorCode::NotFound => ServiceError::not_found(format!("file {path}")),
        ErrorCode::PermissionDenied => ServiceError::Forbidden(message),
        ErrorCode::LinesOutOfRange { .. } => {
            ServiceError::invalid(&["start_line"], message, "value_error")
        }
        ErrorCode::IsDirectory => ServiceError::invalid(&["path"], message, "is_directory"),
        ErrorCode::NotADirectory => ServiceError::invalid(&["path"], message, "not_a_directory"),
        ErrorCode::TooLarge => ServiceError::invalid(&["path"], message, "too_large"),
        ErrorCode::Busy => ServiceError::LimitExceeded(message),
        _ => ServiceError::invalid(&["path"], message, "value_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_start_at_the_workdir_and_bad_paths_are_refused() {
        assert_eq!(
            instance_path("src/a.py").ok(),
            Some("/testbed/src/a.py".into())
        );
        assert_eq!(instance_path("/etc/hosts").ok(), Some("/etc/hosts".into()));
        for bad in ["", "a\0b", &"x".repeat(MAX_PATH_BYTES + 1)] {
            assert!(
                matches!(instance_path(bad), Err(ServiceError::Validation(_))),
                "{bad:?}"
            );
        }
        assert!(instance_path(&"x".repeat(MAX_PATH_BYTES)).is_ok());
        assert_eq!(instance_path(".").ok(), Some("/testbed".into()));
        assert_eq!(instance_path("/.").ok(), Some("/".into()));
    }
}
