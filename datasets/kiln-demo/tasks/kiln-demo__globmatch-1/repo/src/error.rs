use std::fmt;

/// Why a pattern could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Byte offset in the pattern where the problem starts.
    pub pos: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `[` without a matching `]`.
    UnclosedClass,
    /// A range such as `[z-a]` whose end sorts before its start.
    InvalidRange,
    /// `**` glued to other characters, as in `a**` or `**b`.
    InvalidGlobstar,
    /// A backslash at the very end of the pattern.
    DanglingEscape,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::UnclosedClass => "unclosed character class",
            ErrorKind::InvalidRange => "invalid range in character class",
            ErrorKind::InvalidGlobstar => "'**' must be a whole path component",
            ErrorKind::DanglingEscape => "pattern ends with an escape character",
        };
        write!(f, "{} at offset {}", what, self.pos)
    }
}

impl std::error::Error for PatternError {}
