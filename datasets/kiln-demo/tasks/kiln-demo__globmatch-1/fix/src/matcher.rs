//! Backtracking matcher over the token list.

use crate::parse::{ClassItem, Token};
use crate::MatchOptions;

pub(crate) fn matches(tokens: &[Token], path: &[char], opts: MatchOptions) -> bool {
    match_at(tokens, 0, path, 0, opts)
}

fn at_component_start(path: &[char], pi: usize) -> bool {
    pi == 0 || path[pi - 1] == '/'
}

/// Wildcards never match the dot that starts a hidden component unless
/// the `dot` option is set; literal dots in the pattern always do.
fn hidden_here(path: &[char], pi: usize, opts: MatchOptions) -> bool {
    !opts.dot && path.get(pi) == Some(&'.') && at_component_start(path, pi)
}

fn same_char(a: char, b: char, opts: MatchOptions) -> bool {
    if opts.case_insensitive {
        a == b || a.to_lowercase().eq(b.to_lowercase())
    } else {
        a == b
    }
}

fn class_matches(negated: bool, items: &[ClassItem], c: char, opts: MatchOptions) -> bool {
    let in_range = |c: char| {
        items.iter().any(|item| match *item {
            ClassItem::Single(s) => same_char(s, c, opts),
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
        })
    };
    let found = if opts.case_insensitive {
        in_range(c) || c.to_lowercase().any(&in_range) || c.to_uppercase().any(&in_range)
    } else {
        in_range(c)
    };
    found != negated
}

/// The index just past the next `/` at or after `pi`, if any.
fn next_component(path: &[char], pi: usize) -> Option<usize> {
    path[pi..].iter().position(|&c| c == '/').map(|off| pi + off + 1)
}

fn match_at(tokens: &[Token], ti: usize, path: &[char], pi: usize, opts: MatchOptions) -> bool {
    let token = match tokens.get(ti) {
        Some(token) => token,
        None => return pi == path.len(),
    };
    match token {
        Token::Char(c) => {
            pi < path.len() && same_char(*c, path[pi], opts) && match_at(tokens, ti + 1, path, pi + 1, opts)
        }
        Token::AnyChar => {
            pi < path.len()
                && path[pi] != '/'
                && !hidden_here(path, pi, opts)
                && match_at(tokens, ti + 1, path, pi + 1, opts)
        }
        Token::Class { negated, items } => {
            pi < path.len()
                && path[pi] != '/'
                && !hidden_here(path, pi, opts)
                && class_matches(*negated, items, path[pi], opts)
                && match_at(tokens, ti + 1, path, pi + 1, opts)
        }
        Token::AnyRun => {
            if hidden_here(path, pi, opts) {
                return match_at(tokens, ti + 1, path, pi, opts);
            }
            let mut end = pi;
            loop {
                if match_at(tokens, ti + 1, path, end, opts) {
                    return true;
                }
                if end == path.len() || path[end] == '/' {
                    return false;
                }
                end += 1;
            }
        }
        Token::AnyDirs => {
            // Zero directories is a match too: `a/**/b` matches `a/b`.
            let mut pos = pi;
            loop {
                if match_at(tokens, ti + 1, path, pos, opts) {
                    return true;
                }
                if hidden_here(path, pos, opts) {
                    return false;
                }
                match next_component(path, pos) {
                    Some(next) => pos = next,
                    None => return false,
                }
            }
        }
        Token::AnyTail => {
            let mut pos = pi;
            loop {
                if hidden_here(path, pos, opts) {
                    return false;
                }
                match next_component(path, pos) {
                    Some(next) => pos = next,
                    None => return match_at(tokens, ti + 1, path, path.len(), opts),
                }
            }
        }
    }
}
