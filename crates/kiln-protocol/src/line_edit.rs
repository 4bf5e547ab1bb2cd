//! `edit_lines`: replacing whole lines of a file by number. Pure, so the agent (on a real
//! file) and test backends (on files in memory) answer alike.
//!
//! Lines are counted as editors count them: `"a\nb"` and `"a\nb\n"` both have two lines,
//! `""` has none. Lines `start..=end` (1-based) are replaced by `new_text`;
//! `end = start - 1` replaces nothing, so it inserts before line `start` (and
//! `start = count + 1` appends). `new_text` gets a final newline when it lacks one, so
//! the lines after it stay lines of their own, unless the edit reaches the end of a file
//! that had no final newline (which then still has none).

use crate::{AgentError, ErrorCode, Replaced};

/// Lines of context around the edit in the returned snippet, as `str_replace` gives.
const SNIPPET_LINES: u64 = 4;

/// `content` with lines `start_line..=end_line` replaced by `new_text`, and what the reply
/// says of it; `path` only names the file in errors.
pub fn replace_lines(
    content: &[u8],
    path: &str,
    start_line: u64,
    end_line: u64,
    new_text: &str,
) -> Result<(Vec<u8>, Replaced), AgentError> {
    let starts = line_starts(content);
    let count = starts.len() as u64;
    if start_line == 0
        || start_line > count + 1
        || end_line.saturating_add(1) < start_line
        || end_line > count
    {
        return Err(AgentError::new(
            ErrorCode::LinesOutOfRange { line_count: count },
            format!(
                "lines {start_line} to {end_line} are not a range of {path}, which has {count} lines: \
                 start_line must be 1 to {}, end_line start_line - 1 (to insert) to {count}",
                count + 1
            ),
        ));
    }
    let byte_at = |line: u64| -> usize {
        // Line `line` (1-based) starts at starts[line - 1]; one past the last starts at the end.
        usize::try_from(line - 1)
            .ok()
            .and_then(|i| starts.get(i).copied())
            .unwrap_or(content.len())
    };
    let from = byte_at(start_line);
    let to = byte_at(end_line + 1);
    let unterminated = !content.is_empty() && !content.ends_with(b"\n");
    let reaches_end = to == content.len();

    let mut inserted = Vec::with_capacity(new_text.len() + 2);
    if !new_text.is_empty() {
        // Appending after a last line without newline: end that line first.
        if from == content.len() && unterminated {
            inserted.push(b'\n');
        }
        inserted.extend_from_slice(new_text.as_bytes());
        let keeps_unterminated_end = reaches_end && unterminated;
        if !(new_text.ends_with('\n') || keeps_unterminated_end) {
            inserted.push(b'\n');
        }
    }
    let mut updated = Vec::with_capacity(content.len() - (to - from) + inserted.len());
    updated.extend_from_slice(&content[..from]);
    updated.extend_from_slice(&inserted);
    updated.extend_from_slice(&content[to..]);

    let new_lines = new_text.lines().count() as u64;
    let snippet_start = start_line.saturating_sub(SNIPPET_LINES).max(1);
    let snippet_end = start_line + new_lines + SNIPPET_LINES;
    let text = String::from_utf8_lossy(&updated);
    let snippet: Vec<&str> = text
        .lines()
        .skip(usize::try_from(snippet_start - 1).unwrap_or(usize::MAX))
        .take(usize::try_from(snippet_end - snippet_start).unwrap_or(usize::MAX))
        .collect();
    let replaced = Replaced {
        size: updated.len() as u64,
        line: start_line,
        snippet: snippet.join("\n"),
        snippet_start_line: snippet_start,
    };
    Ok((updated, replaced))
}

/// Byte offset where each line starts.
fn line_starts(content: &[u8]) -> Vec<usize> {
    if content.is_empty() {
        return Vec::new();
    }
    let mut starts = vec![0];
    starts.extend(
        content
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' && i + 1 < content.len())
            .map(|(i, _)| i + 1),
    );
    starts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn edit(content: &str, start: u64, end: u64, new: &str) -> String {
        let (out, _) = replace_lines(content.as_bytes(), "f", start, end, new).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn replaces_a_range_of_lines() {
        assert_eq!(edit("a\nb\nc\nd\n", 2, 3, "X\nY\nZ\n"), "a\nX\nY\nZ\nd\n");
        assert_eq!(edit("a\nb\nc\n", 2, 2, "B"), "a\nB\nc\n");
        assert_eq!(edit("a\nb\nc\n", 1, 3, ""), "");
        assert_eq!(edit("a\nb\nc\n", 2, 2, ""), "a\nc\n");
    }

    #[test]
    fn an_empty_range_inserts() {
        assert_eq!(edit("a\nb\n", 1, 0, "top"), "top\na\nb\n");
        assert_eq!(edit("a\nb\n", 2, 1, "mid\n"), "a\nmid\nb\n");
        assert_eq!(edit("a\nb\n", 3, 2, "end"), "a\nb\nend\n");
        assert_eq!(edit("", 1, 0, "only"), "only\n");
    }

    #[test]
    fn a_file_without_final_newline_keeps_its_style() {
        assert_eq!(edit("a\nb", 2, 2, "B"), "a\nB");
        assert_eq!(edit("a\nb", 3, 2, "c"), "a\nb\nc");
        assert_eq!(edit("a\nb", 1, 1, "A"), "A\nb");
    }

    #[test]
    fn out_of_range_names_the_line_count() {
        for (start, end) in [(0, 0), (5, 4), (2, 4), (3, 1), (1, 4)] {
            let err = replace_lines(b"a\nb\nc\n", "f", start, end, "x").unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::LinesOutOfRange { line_count: 3 },
                "{start}-{end}"
            );
            assert!(err.message.contains("has 3 lines"), "{}", err.message);
        }
    }

    #[test]
    fn the_snippet_shows_the_new_lines_in_context() {
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let (_, replaced) = replace_lines(text.as_bytes(), "f", 10, 10, "ten\nTEN").unwrap();
        assert_eq!(replaced.line, 10);
        assert_eq!(replaced.snippet_start_line, 6);
        assert_eq!(
            replaced.snippet,
            "line 6\nline 7\nline 8\nline 9\nten\nTEN\nline 11\nline 12\nline 13\nline 14"
        );
    }
}
