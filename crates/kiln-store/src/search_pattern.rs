//! The LIKE pattern for "contains this text", with the text matched literally.

/// The escape character both backends are told to use (`ESCAPE '\'`).
pub(crate) const LIKE_ESCAPE: char = '\\';

/// `%text%` with `%`, `_` and the escape character itself escaped, so that a search for
/// `django__` matches those two underscores and nothing else.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(ch);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_escape_are_escaped() {
        assert_eq!(contains_pattern("a_b%c\\d"), "%a\\_b\\%c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
        assert_eq!(contains_pattern("plain"), "%plain%");
    }
}
