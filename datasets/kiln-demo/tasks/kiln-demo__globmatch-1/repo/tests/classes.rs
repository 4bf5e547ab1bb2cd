use globmatch::{ErrorKind, MatchOptions, Pattern};

fn matches(pattern: &str, path: &str) -> bool {
    Pattern::new(pattern).unwrap().matches(path)
}

#[test]
fn class_lists_and_ranges() {
    assert!(matches("[abc].txt", "b.txt"));
    assert!(!matches("[abc].txt", "d.txt"));
    assert!(matches("log[0-9][0-9]", "log42"));
    assert!(!matches("log[0-9]", "logx"));
}

#[test]
fn negated_classes() {
    assert!(matches("[!a-c]x", "dx"));
    assert!(!matches("[!a-c]x", "bx"));
    assert!(matches("[^0-9]", "z"));
    assert!(!matches("[!x]", "/"));
}

#[test]
fn bracket_and_dash_as_members() {
    assert!(matches("[]]", "]"));
    assert!(matches("[!]]", "a"));
    assert!(matches("[a-]", "-"));
    assert!(matches("[-a]", "-"));
    assert!(matches(r"[\]x]", "]"));
}

#[test]
fn inverted_range_is_an_error() {
    let err = Pattern::new("[z-a]").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidRange);
}

#[test]
fn class_case_insensitive() {
    let opts = MatchOptions { case_insensitive: true, ..MatchOptions::default() };
    assert!(Pattern::new("[a-c]").unwrap().matches_with("B", opts));
    assert!(Pattern::new("[A-C]").unwrap().matches_with("b", opts));
    assert!(!Pattern::new("[A-C]").unwrap().matches("b"));
}

#[test]
fn unicode_in_classes() {
    assert!(matches("caf[éeè]", "café"));
    assert!(matches("[α-ω]", "λ"));
}
