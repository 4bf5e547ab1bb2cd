//! `str_replace` on a file: SWE-agent's semantics and wording, from
//! [`kiln_protocol::str_replace`], written atomically.

use std::fs;

use kiln_protocol::{AgentError, ErrorCode, Replaced};

use crate::atomic_write::write_atomically;
use crate::file_ops::io_error;

/// Largest file `str_replace` will edit.
const MAX_EDIT_BYTES: u64 = 64 * 1024 * 1024;

/// Replaces the single occurrence of `old` with `new` in the file at `path`, atomically,
/// keeping the file's mode.
pub fn str_replace(path: &str, old: &str, new: &str) -> Result<Replaced, AgentError> {
    if old.is_empty() {
        return Err(AgentError::new(
            ErrorCode::InvalidRequest,
            "old_str must not be empty",
        ));
    }
    let meta = fs::metadata(path).map_err(|err| io_error("edit", path, &err))?;
    if meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::IsDirectory,
            format!("{path} is a directory"),
        ));
    }
    if meta.len() > MAX_EDIT_BYTES {
        return Err(AgentError::new(
            ErrorCode::TooLarge,
            format!(
                "{path} is {} bytes, more than the {MAX_EDIT_BYTES} str_replace edits",
                meta.len()
            ),
        ));
    }
    let content = fs::read(path).map_err(|err| io_error("edit", path, &err))?;
    let (updated, replaced) = kiln_protocol::str_replace::replace_once(&content, path, old, new)?;
    write_atomically(path, &updated, None, false)?;
    Ok(replaced)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_edited_in_place_and_the_snippet_returned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).unwrap();
        let replaced = str_replace(path.to_str().unwrap(), "line 10\n", "ten\nTEN\n").unwrap();
        assert_eq!(replaced.line, 10);
        assert_eq!(replaced.snippet_start_line, 6);
        assert_eq!(
            replaced.snippet,
            "line 6\nline 7\nline 8\nline 9\nten\nTEN\nline 11\nline 12\nline 13\nline 14\nline 15"
        );
        assert!(fs::read_to_string(&path)
            .unwrap()
            .contains("line 9\nten\nTEN\nline 11"));
    }
}
