use globmatch::{MatchOptions, Pattern};

fn matches(pattern: &str, path: &str) -> bool {
    Pattern::new(pattern).unwrap().matches(path)
}

#[test]
fn globstar_spans_directories() {
    assert!(matches("src/**/*.rs", "src/parse/lexer.rs"));
    assert!(matches("src/**/*.rs", "src/a/b/c/d.rs"));
    assert!(!matches("src/**/*.rs", "tests/a/b.rs"));
}

#[test]
fn trailing_globstar_matches_everything_below() {
    assert!(matches("target/**", "target/debug/build/x"));
    assert!(matches("target/**", "target/x"));
    assert!(!matches("target/**", "targets/x"));
}

#[test]
fn lone_globstar_matches_any_path() {
    assert!(matches("**", "a/b/c"));
    assert!(matches("**", "file"));
}

#[test]
fn globstar_skips_hidden_directories() {
    assert!(!matches("**/*.rs", "a/.git/x.rs"));
    assert!(!matches("src/**", "src/.cache/x"));
    let dot = MatchOptions { dot: true, ..MatchOptions::default() };
    assert!(Pattern::new("src/**").unwrap().matches_with("src/.cache/x", dot));
    assert!(Pattern::new("a/**/*.rs").unwrap().matches_with("a/.git/x.rs", dot));
}

#[test]
fn globstar_in_the_middle_with_wildcard_dirs() {
    assert!(matches("a/**/b/*.txt", "a/x/y/b/z.txt"));
    assert!(!matches("a/**/b/*.txt", "a/x/y/c/z.txt"));
}
