//! Shell-style glob matching for `/`-separated paths.
//!
//! See the README for the syntax. Patterns are compiled once with
//! [`Pattern::new`] and can then be matched against many paths.

mod error;
mod matcher;
mod parse;

pub use error::{ErrorKind, PatternError};

use parse::Token;

/// Knobs for [`Pattern::matches_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchOptions {
    /// Compare letters without regard to case.
    pub case_insensitive: bool,
    /// Let wildcards match a `.` at the start of a path component.
    pub dot: bool,
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        Ok(Pattern { source: pattern.to_string(), tokens: parse::parse(pattern)? })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches with the default options.
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with(path, MatchOptions::default())
    }

    pub fn matches_with(&self, path: &str, options: MatchOptions) -> bool {
        let path: Vec<char> = normalize(path).chars().collect();
        matcher::matches(&self.tokens, &path, options)
    }

    /// The part of the pattern before its first wildcard, e.g. `src/` for
    /// `src/**/*.rs`. Useful to limit a directory walk.
    pub fn literal_prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

/// Drops a leading `./` and repeated slashes, so `./a//b` matches like `a/b`.
fn normalize(path: &str) -> String {
    let trimmed = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(trimmed.len());
    for c in trimmed.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Escapes every glob metacharacter in `text` so it matches literally.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An ordered list of patterns where a leading `!` negates one, like a
/// `.gitignore`: the last pattern that matches a path decides.
#[derive(Debug, Clone, Default)]
pub struct PatternList {
    rules: Vec<(bool, Pattern)>,
}

impl PatternList {
    pub fn new<I, S>(patterns: I) -> Result<PatternList, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut rules = Vec::new();
        for text in patterns {
            let text = text.as_ref();
            match text.strip_prefix('!') {
                Some(rest) => rules.push((false, Pattern::new(rest)?)),
                None => rules.push((true, Pattern::new(text)?)),
            }
        }
        Ok(PatternList { rules })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.is_match_with(path, MatchOptions::default())
    }

    pub fn is_match_with(&self, path: &str, options: MatchOptions) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, pattern)| pattern.matches_with(path, options))
            .map_or(false, |(include, _)| *include)
    }
}
