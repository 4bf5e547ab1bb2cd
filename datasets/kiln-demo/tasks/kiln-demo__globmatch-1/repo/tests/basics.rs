use globmatch::{escape, ErrorKind, MatchOptions, Pattern, PatternList};

fn matches(pattern: &str, path: &str) -> bool {
    Pattern::new(pattern).unwrap().matches(path)
}

#[test]
fn literal_patterns() {
    assert!(matches("Cargo.toml", "Cargo.toml"));
    assert!(!matches("Cargo.toml", "cargo.toml"));
    assert!(!matches("src", "src/lib.rs"));
}

#[test]
fn question_mark_is_one_character() {
    assert!(matches("file?.txt", "file1.txt"));
    assert!(!matches("file?.txt", "file.txt"));
    assert!(!matches("a?b", "a/b"));
}

#[test]
fn star_stays_within_a_component() {
    assert!(matches("*.rs", "main.rs"));
    assert!(matches("*", ""));
    assert!(!matches("*.rs", "src/main.rs"));
    assert!(matches("src/*.rs", "src/main.rs"));
    assert!(matches("a*b*c", "axxbyyc"));
    assert!(!matches("a*b*c", "axxbyy"));
}

#[test]
fn hidden_files_need_explicit_dot() {
    assert!(!matches("*", ".bashrc"));
    assert!(!matches("?bashrc", ".bashrc"));
    assert!(matches(".*", ".bashrc"));
    assert!(!matches("src/*", "src/.cache"));
    let dot = MatchOptions { dot: true, ..MatchOptions::default() };
    assert!(Pattern::new("*").unwrap().matches_with(".bashrc", dot));
}

#[test]
fn case_insensitive_option() {
    let opts = MatchOptions { case_insensitive: true, ..MatchOptions::default() };
    let pat = Pattern::new("README.*").unwrap();
    assert!(pat.matches_with("readme.md", opts));
    assert!(!pat.matches("readme.md"));
}

#[test]
fn escapes_match_literally() {
    assert!(matches(r"what\?.txt", "what?.txt"));
    assert!(!matches(r"what\?.txt", "whatX.txt"));
    assert!(matches(&escape("a*[b].txt"), "a*[b].txt"));
    assert!(!matches(&escape("a*.txt"), "abc.txt"));
}

#[test]
fn paths_are_normalized() {
    assert!(matches("src/*.rs", "./src/lib.rs"));
    assert!(matches("src/*.rs", "src//lib.rs"));
}

#[test]
fn pattern_errors() {
    let err = Pattern::new("src/[abc").unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnclosedClass);
    assert_eq!(err.pos, 4);
    assert_eq!(Pattern::new("trailing\\").unwrap_err().kind, ErrorKind::DanglingEscape);
    assert_eq!(Pattern::new("a**").unwrap_err().kind, ErrorKind::InvalidGlobstar);
    assert_eq!(Pattern::new("**b").unwrap_err().kind, ErrorKind::InvalidGlobstar);
    assert_eq!(err.to_string(), "unclosed character class at offset 4");
}

#[test]
fn literal_prefix() {
    assert_eq!(Pattern::new("src/bin/*.rs").unwrap().literal_prefix(), "src/bin/");
    assert_eq!(Pattern::new("*.rs").unwrap().literal_prefix(), "");
}

#[test]
fn pattern_list_last_match_wins() {
    let list = PatternList::new(["*.log", "!keep.log", "build/*"]).unwrap();
    assert!(list.is_match("debug.log"));
    assert!(!list.is_match("keep.log"));
    assert!(list.is_match("build/out"));
    assert!(!list.is_match("src/main.rs"));
}
