//! `str_replace` with SWE-agent's semantics and wording: `old` must occur exactly once,
//! verbatim. Unlike SWE-agent, tabs are not expanded (that rewrote whole files).

use std::fs;

use kiln_protocol::{AgentError, ErrorCode, Replaced};

use crate::atomic_write::write_atomically;
use crate::file_ops::io_error;

/// Lines of context around the edit in the returned snippet, as in SWE-agent.
const SNIPPET_LINES: usize = 4;

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
    let starts = occurrences(&content, old.as_bytes());
    let start = match starts.as_slice() {
        [] => {
            return Err(AgentError::new(
                ErrorCode::NoMatch,
                format!(
                "No replacement was performed, old_str `{old}` did not appear verbatim in {path}."
            ),
            ))
        }
        [only] => *only,
        many => {
            let lines: Vec<u64> = many.iter().map(|&at| line_of(&content, at)).collect();
            return Err(AgentError::new(
                ErrorCode::MultipleMatches {
                    count: many.len() as u64,
                    lines: lines.clone(),
                },
                format!(
                    "No replacement was performed. Multiple occurrences of old_str `{old}` in lines {lines:?}. Please ensure it is unique"
                ),
            ));
        }
    };
    let mut updated = Vec::with_capacity(content.len() - old.len() + new.len());
    updated.extend_from_slice(&content[..start]);
    updated.extend_from_slice(new.as_bytes());
    updated.extend_from_slice(&content[start + old.len()..]);
    write_atomically(path, &updated, None, false)?;

    // SWE-agent's snippet: from 4 lines before the edit to 4 lines after its end.
    let first_line = line_of(&content, start) as usize - 1;
    let snippet_start = first_line.saturating_sub(SNIPPET_LINES);
    let snippet_end = first_line + SNIPPET_LINES + new.matches('\n').count();
    let text = String::from_utf8_lossy(&updated);
    let snippet: Vec<&str> = text
        .split('\n')
        .skip(snippet_start)
        .take(snippet_end + 1 - snippet_start)
        .collect();
    Ok(Replaced {
        size: updated.len() as u64,
        line: first_line as u64 + 1,
        snippet: snippet.join("\n"),
        snippet_start_line: snippet_start as u64 + 1,
    })
}

/// Starts of the non-overlapping occurrences of `needle`, left to right (Python's
/// `str.count` semantics, which SWE-agent uses).
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        match haystack[at..]
            .windows(needle.len())
            .position(|window| window == needle)
        {
            Some(offset) => {
                found.push(at + offset);
                at += offset + needle.len();
            }
            None => break,
        }
    }
    found
}

/// 1-based line number of byte offset `at`.
fn line_of(content: &[u8], at: usize) -> u64 {
    content[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn occurrences_do_not_overlap() {
        assert_eq!(occurrences(b"aaaa", b"aa"), vec![0, 2]);
        assert_eq!(occurrences(b"xyz", b"q"), Vec::<usize>::new());
        assert_eq!(occurrences(b"ab", b"abc"), Vec::<usize>::new());
    }

    #[test]
    fn snippet_covers_four_lines_around_the_edit() {
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
    }
}
