//! Pattern text to tokens.

use crate::error::{ErrorKind, PatternError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClassItem {
    Single(char),
    Range(char, char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    Char(char),
    /// `?`
    AnyChar,
    /// `*`
    AnyRun,
    /// `**/`: whole directories, each with its trailing `/`.
    AnyDirs,
    /// `**` at the end of the pattern: everything that is left.
    AnyTail,
    Class { negated: bool, items: Vec<ClassItem> },
}

pub(crate) fn parse(pattern: &str) -> Result<Vec<Token>, PatternError> {
    let chars: Vec<(usize, char)> = pattern.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            '?' => tokens.push(Token::AnyChar),
            '*' => {
                if i + 1 < chars.len() && chars[i + 1].1 == '*' {
                    let starts_component = i == 0 || chars[i - 1].1 == '/';
                    let after = chars.get(i + 2).map(|&(_, c)| c);
                    if !starts_component || !(after.is_none() || after == Some('/')) {
                        return Err(PatternError { pos, kind: ErrorKind::InvalidGlobstar });
                    }
                    if after == Some('/') {
                        tokens.push(Token::AnyDirs);
                        i += 3;
                    } else {
                        tokens.push(Token::AnyTail);
                        i += 2;
                    }
                    continue;
                }
                tokens.push(Token::AnyRun);
            }
            '[' => {
                let (token, next) = parse_class(&chars, i)?;
                tokens.push(token);
                i = next;
                continue;
            }
            '\\' => {
                let escaped = chars
                    .get(i + 1)
                    .ok_or(PatternError { pos, kind: ErrorKind::DanglingEscape })?;
                tokens.push(Token::Char(escaped.1));
                i += 2;
                continue;
            }
            _ => tokens.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// Parses the class that opens at `chars[open]`; returns the token and the
/// index just past the closing `]`.
fn parse_class(chars: &[(usize, char)], open: usize) -> Result<(Token, usize), PatternError> {
    let unclosed = PatternError { pos: chars[open].0, kind: ErrorKind::UnclosedClass };
    let mut i = open + 1;
    let mut negated = false;
    if let Some(&(_, c)) = chars.get(i) {
        if c == '!' || c == '^' {
            negated = true;
            i += 1;
        }
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let &(pos, c) = chars.get(i).ok_or_else(|| unclosed.clone())?;
        if c == ']' && !first {
            return Ok((Token::Class { negated, items }, i + 1));
        }
        first = false;
        let (start, width) = class_char(chars, i).ok_or_else(|| unclosed.clone())?;
        i += width;
        let is_range = matches!(chars.get(i), Some(&(_, '-')))
            && !matches!(chars.get(i + 1), Some(&(_, ']')) | None);
        if is_range {
            let (end, width) = class_char(chars, i + 1).ok_or_else(|| unclosed.clone())?;
            if end < start {
                return Err(PatternError { pos, kind: ErrorKind::InvalidRange });
            }
            items.push(ClassItem::Range(start, end));
            i += 1 + width;
        } else {
            items.push(ClassItem::Single(start));
        }
    }
}

/// One possibly escaped character inside a class, and how many pattern
/// characters it used.
fn class_char(chars: &[(usize, char)], i: usize) -> Option<(char, usize)> {
    match chars.get(i)?.1 {
        '\\' => chars.get(i + 1).map(|&(_, c)| (c, 2)),
        c => Some((c, 1)),
    }
}
