//! `str_replace`'s edit itself, with SWE-agent's semantics and wording: `old` must occur
//! exactly once, verbatim (tabs are not expanded, which rewrote whole files). Pure, so the
//! agent (on a real file) and test backends (on files in memory) answer alike.

use crate::{AgentError, ErrorCode, Replaced};

/// Lines of context around the edit in the returned snippet, as in SWE-agent.
const SNIPPET_LINES: usize = 4;

/// `content` with the single occurrence of `old` replaced by `new`, and what the reply
/// says of it; `path` only names the file in errors.
pub fn replace_once(
    content: &[u8],
    path: &str,
    old: &str,
    new: &str,
) -> Result<(Vec<u8>, Replaced), AgentError> {
    if old.is_empty() {
        return Err(AgentError::new(
            ErrorCode::InvalidRequest,
            "old_str must not be empty",
        ));
    }
    let starts = occurrences(content, old.as_bytes());
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
            let lines: Vec<u64> = many.iter().map(|&at| line_of(content, at)).collect();
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

    // SWE-agent's snippet: from 4 lines before the edit to 4 lines after its end.
    let first_line = usize::try_from(line_of(content, start)).unwrap_or(1) - 1;
    let snippet_start = first_line.saturating_sub(SNIPPET_LINES);
    let snippet_end = first_line + SNIPPET_LINES + new.matches('\n').count();
    let text = String::from_utf8_lossy(&updated);
    let snippet: Vec<&str> = text
        .split('\n')
        .skip(snippet_start)
        .take(snippet_end + 1 - snippet_start)
        .collect();
    let replaced = Replaced {
        size: updated.len() as u64,
        line: first_line as u64 + 1,
        snippet: snippet.join("\n"),
        snippet_start_line: snippet_start as u64 + 1,
    };
    Ok((updated, replaced))
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
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let (_, replaced) =
            replace_once(text.as_bytes(), "f.txt", "line 10\n", "ten\nTEN\n").unwrap();
        assert_eq!(replaced.line, 10);
        assert_eq!(replaced.snippet_start_line, 6);
        assert_eq!(
            replaced.snippet,
            "line 6\nline 7\nline 8\nline 9\nten\nTEN\nline 11\nline 12\nline 13\nline 14\nline 15"
        );
    }
}
