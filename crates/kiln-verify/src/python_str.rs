//! Python `str` semantics the reference parsers rely on.
//!
//! `str.split()` and `str.strip()` use `str.isspace`, which is Unicode `White_Space`
//! plus the ASCII separators U+001C..U+001F; Rust's `char::is_whitespace` lacks the
//! latter, and a log can contain them, so tokenisation would drift.

/// `str.isspace` for one character.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `str.split()` with no separator: runs of whitespace separate, empty tokens vanish.
pub(crate) fn split_whitespace(s: &str) -> Vec<&str> {
    s.split(is_space).filter(|t| !t.is_empty()).collect()
}

/// `str.strip()` with no argument.
pub(crate) fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `str.lstrip()` with no argument.
pub(crate) fn lstrip(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// `s.split(sep)[0]`: the text before the first `sep`, or all of `s`.
pub(crate) fn before_first<'a>(s: &'a str, sep: &str) -> &'a str {
    s.split_once(sep).map_or(s, |(head, _)| head)
}

/// Regex classes that mean in Rust what `\s`, `\S` and `\w` mean in Python's `re`
/// for `str` patterns (Unicode mode). `\d` is Unicode `Nd` in both.
pub(crate) const RE_SPACE: &str = r"[\s\x1c-\x1f]";
pub(crate) const RE_NON_SPACE: &str = r"[^\s\x1c-\x1f]";
pub(crate) const RE_WORD: &str = r"[\p{L}\p{N}_]";

/// Expands `{s}`, `{S}` and `{w}` in a pattern written with Python's classes in mind.
pub(crate) fn python_regex(pattern: &str) -> regex::Regex {
    let expanded = pattern
        .replace("{s}", RE_SPACE)
        .replace("{S}", RE_NON_SPACE)
        .replace("{w}", RE_WORD);
    // The patterns are literals in this crate, so failure is a programming error
    // caught by every test that touches the parser.
    regex::Regex::new(&expanded).expect("static parser regex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python_on_separator_controls() {
        assert_eq!(
            split_whitespace("a\u{1c}b  c\u{a0}d\r"),
            ["a", "b", "c", "d"]
        );
        assert_eq!(strip("\u{1f} x \r"), "x");
    }

    #[test]
    fn python_classes_expand() {
        let re = python_regex(r"^{w}+{s}{S}$");
        assert!(re.is_match("é_1\u{1d}x"));
        assert!(!re.is_match("a-b x"));
    }
}
