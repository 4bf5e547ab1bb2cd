//! Request and response shapes of the instance file routes.
use chrono::{DateTime, Utc};
use kiln_services::instances::files::{EditOutcome, EntryKind, FileEntry, FileListing};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `?format=` of a read: the raw bytes (default) or a JSON object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadFormat {
    #[default]
    Raw,
    Json,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadFileParams {
    /// The file; relative paths start at the instance's working directory (`/testbed`).
    pub path: String,
    /// `raw` (default): the bytes as `application/octet-stream`; `json`: a JSON object
    /// with the content as UTF-8 text or base64.
    #[param(inline)]
    pub format: Option<ReadFormat>,
    /// First byte to read (default 0). Or use a `Range: bytes=a-b` header.
    pub offset: Option<u64>,
    /// Bytes to read at most (default: to the end; at most `files.max_read_bytes`).
    pub length: Option<u64>,
}

/// How `content` is encoded in a JSON read.
#[derive(Serialize, ToSchema, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

/// A file's content, read with `?format=json`.
#[derive(Serialize, ToSchema)]
pub struct FileContentView {
    /// The file as resolved in the sandbox.
    pub path: String,
    /// Size of the whole file, in bytes.
    pub size: u64,
    /// Where `content` starts in the file.
    pub offset: u64,
    /// Bytes in `content` (decoded).
    pub length: u64,
    /// Permission bits, in octal (e.g. `"0644"`).
    pub mode: String,
    /// `utf-8` when the bytes are valid UTF-8 text, else `base64`.
    pub encoding: ContentEncoding,
    pub content: String,
    /// The file goes on after `content`.
    pub truncated: bool,
}

/// Permission bits: an integer (`420`) or an octal string (`"0644"`, `"644"`, `"0o644"`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ModeValue {
    Bits(u32),
    Octal(String),
}

/// A file to write, as JSON (for raw bytes, send them as the body with `?path=`).
/// Exactly one of `content` (UTF-8 text) and `content_base64`.
#[derive(Deserialize, ToSchema)]
pub struct WriteFileBody {
    /// The file; relative paths start at the instance's working directory.
    pub path: String,
    pub content: Option<String>,
    pub content_base64: Option<String>,
    /// Permission bits (default: the existing file's, or 0644 for a new one).
    pub mode: Option<ModeValue>,
    /// Create missing parent directories (mode 0755).
    #[serde(default)]
    pub create_parents: bool,
}

/// Query of a raw write (any body that is not `application/json`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WriteFileParams {
    /// The file (required with a raw body).
    pub path: Option<String>,
    /// Permission bits in octal, e.g. `0755`.
    pub mode: Option<String>,
    /// Create missing parent directories.
    pub create_parents: Option<bool>,
}

/// A file was replaced.
#[derive(Serialize, ToSchema)]
pub struct FileWrittenView {
    pub path: String,
    /// Bytes written.
    pub size: u64,
}

/// An edit in place: either `old_str` + `new_str` (`old_str` must occur exactly once,
/// as Codeset's `str_replace`), or `start_line` + `end_line` + `new_text` (1-based,
/// inclusive; `end_line = start_line - 1` inserts before `start_line`).
#[derive(Deserialize, ToSchema)]
pub struct EditFileBody {
    pub path: String,
    pub old_str: Option<String>,
    pub new_str: Option<String>,
    #[schema(minimum = 1)]
    pub start_line: Option<u64>,
    #[schema(minimum = 0)]
    pub end_line: Option<u64>,
    pub new_text: Option<String>,
}

/// What an edit did. `success` is false (nothing changed, `message` says why) when
/// `old_str` occurs zero or several times.
#[derive(Serialize, ToSchema)]
pub struct EditFileView {
    pub path: String,
    pub success: bool,
    pub message: String,
    /// First line of the edit.
    pub line: Option<u64>,
    /// New size of the file.
    pub size: Option<u64>,
    /// A few lines around the edit, from the new content.
    pub snippet: Option<String>,
    pub snippet_start_line: Option<u64>,
}

impl From<EditOutcome> for EditFileView {
    fn from(o: EditOutcome) -> Self {
        Self {
            path: o.path,
            success: o.success,
            message: o.message,
            line: o.line,
            size: o.size,
            snippet: o.snippet,
            snippet_start_line: o.snippet_start_line,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilesParams {
    /// The directory (default: the working directory, `/testbed`).
    pub path: Option<String>,
    /// Levels to descend: 1 (default) lists the directory's own entries.
    #[param(minimum = 1)]
    pub depth: Option<u32>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatFileParams {
    /// The path (a symlink is described itself, not followed).
    pub path: String,
}

/// Kind of a file, symlinks not followed.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file of a listing, or a stat.
#[derive(Serialize, ToSchema)]
pub struct FileEntryView {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: u64,
    /// Permission bits, in octal (e.g. `"0755"`).
    pub mode: String,
    /// Last modification, RFC 3339.
    pub mtime: Option<String>,
}

impl From<FileEntry> for FileEntryView {
    fn from(e: FileEntry) -> Self {
        Self {
            name: e.name,
            path: e.path,
            kind: match e.kind {
                EntryKind::File => EntryType::File,
                EntryKind::Dir => EntryType::Dir,
                EntryKind::Symlink => EntryType::Symlink,
                EntryKind::Other => EntryType::Other,
            },
            size: e.size,
            mode: octal(e.mode),
            mtime: DateTime::<Utc>::from_timestamp_millis(e.modified_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

/// A directory's entries to some depth, sorted by path.
#[derive(Serialize, ToSchema)]
pub struct FileListView {
    pub path: String,
    pub entries: Vec<FileEntryView>,
    /// More entries exist than returned (`files.max_list_entries`).
    pub truncated: bool,
}

impl From<FileListing> for FileListView {
    fn from(l: FileListing) -> Self {
        Self {
            path: l.path,
            entries: l.entries.into_iter().map(Into::into).collect(),
            truncated: l.truncated,
        }
    }
}

/// Permission bits as `"0644"`.
pub fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}

/// Permission bits from an octal string: `"0644"`, `"644"` or `"0o644"`.
pub fn parse_octal(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_as_octal() {
        assert_eq!(parse_octal("0644"), Some(0o644));
        assert_eq!(parse_octal("755"), Some(0o755));
        assert_eq!(parse_octal("0o4755"), Some(0o4755));
        assert_eq!(parse_octal("9"), None);
        assert_eq!(parse_octal(""), None);
        assert_eq!(parse_octal("-1"), None);
        assert_eq!(parse_octal("+7"), None);
        assert_eq!(octal(0o644), "0644");
    }
}
