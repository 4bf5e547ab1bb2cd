//! Edits of a file in place: `str_replace` (SWE-agent's semantics and wording, from
//! [`kiln_protocol::str_replace`]) and `edit_lines` ([`kiln_protocol::line_edit`]), each
//! read, changed and written atomically inside the sandbox, in one request.

use std::fs;

use kiln_protocol::{AgentError, EditLinesRequest, ErrorCode, Replaced};

use crate::atomic_write::write_atomically;
use crate::file_ops::{io_error, refuse_special};

/// Largest file `str_replace` and `edit_lines` will edit.
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
    let content = read_for_edit(path, "str_replace")?;
    let (updated, replaced) = kiln_protocol::str_replace::replace_once(&content, path, old, new)?;
    write_atomically(path, &updated, None, false)?;
    Ok(replaced)
}

/// Replaces (or inserts) whole lines of the file at `path`, atomically, keeping its mode.
pub fn edit_lines(edit: &EditLinesRequest) -> Result<Replaced, AgentError> {
    let path = edit.path.as_str();
    let content = read_for_edit(path, "edit_lines")?;
    let (updated, replaced) = kiln_protocol::line_edit::replace_lines(
        &content,
        path,
        edit.start_line,
        edit.end_line,
        &edit.new_text,
    )?;
    write_atomically(path, &updated, None, false)?;
    Ok(replaced)
}

/// The whole content of a regular file small enough to edit.
fn read_for_edit(path: &str, op: &str) -> Result<Vec<u8>, AgentError> {
    let meta = fs::metadata(path).map_err(|err| io_error("edit", path, &err))?;
    if meta.is_dir() {
        return Err(AgentError::new(
            ErrorCode::IsDirectory,
            format!("{path} is a directory"),
        ));
    }
    refuse_special(path, &meta)?;
    if meta.len() > MAX_EDIT_BYTES {
        return Err(AgentError::new(
            ErrorCode::TooLarge,
            format!(
                "{path} is {} bytes, more than the {MAX_EDIT_BYTES} {op} edits",
                meta.len()
            ),
        ));
    }
    fs::read(path).map_err(|err| io_error("edit", path, &err))
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

    fn lines(
        path: &std::path::Path,
        start_line: u64,
        end_line: u64,
        new_text: &str,
    ) -> EditLinesRequest {
        EditLinesRequest {
            path: path.to_str().unwrap().to_string(),
            start_line,
            end_line,
            new_text: new_text.to_string(),
        }
    }

    #[test]
    fn line_edits_replace_and_insert_keeping_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sh");
        fs::write(&path, "#!/bin/sh\necho a\necho b\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o750)).unwrap();

        let replaced = edit_lines(&lines(&path, 2, 3, "echo c")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "#!/bin/sh\necho c\n");
        assert_eq!(replaced.line, 2);
        assert_eq!(replaced.size, 17);
        edit_lines(&lines(&path, 2, 1, "set -e")).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "#!/bin/sh\nset -e\necho c\n"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn a_line_range_outside_the_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        fs::write(&path, "one\ntwo\n").unwrap();
        let err = edit_lines(&lines(&path, 3, 3, "x")).unwrap_err();
        assert_eq!(err.code, ErrorCode::LinesOutOfRange { line_count: 2 });
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let missing = edit_lines(&lines(&dir.path().join("nope"), 1, 0, "x")).unwrap_err();
        assert_eq!(missing.code, ErrorCode::NotFound);
    }
}
