//! RFC 6901 JSON Pointers: parsing, formatting, lookup and editing.

use std::fmt;

use crate::value::Value;

/// A parsed JSON Pointer: the list of reference tokens, unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Pointer {
    tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    MissingSlash,
    /// `~` not followed by `0` or `1`.
    BadEscape { token: String },
    /// The path leads through a missing key or index.
    NotFound { at: String },
    /// An array index that is not a non-negative integer without leading zeros.
    BadIndex { at: String, token: String },
    /// The path leads into a string, number, boolean or null.
    NotAContainer { at: String, kind: &'static str },
    /// The pointer is empty and the operation needs a parent.
    RootNotAllowed,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointerError::MissingSlash => f.write_str("a JSON pointer must be empty or start with '/'"),
            PointerError::BadEscape { token } => write!(f, "invalid '~' escape in {:?}", token),
            PointerError::NotFound { at } => write!(f, "nothing at {:?}", at),
            PointerError::BadIndex { at, token } => write!(f, "invalid array index {:?} at {:?}", token, at),
            PointerError::NotAContainer { at, kind } => write!(f, "{:?} is a {}, not a container", at, kind),
            PointerError::RootNotAllowed => f.write_str("this operation needs a non-empty pointer"),
        }
    }
}

impl std::error::Error for PointerError {}

fn unescape(token: &str) -> Result<String, PointerError> {
    let bytes = token.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(PointerError::BadEscape { token: token.to_string() });
        }
    }
    // "~1" must be decoded before "~0": otherwise "~01" (an escaped "~"
    // followed by "1") would turn into "~1" and then into "/".
    Ok(token.replace("~1", "/").replace("~0", "~"))
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Parses an array index token; `-` (one past the end) is handled by callers.
fn parse_index(token: &str, at: &str) -> Result<usize, PointerError> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !valid {
        return Err(PointerError::BadIndex { at: at.to_string(), token: token.to_string() });
    }
    token.parse().map_err(|_| PointerError::BadIndex { at: at.to_string(), token: token.to_string() })
}

impl Pointer {
    /// The empty pointer, which refers to the whole document.
    pub fn root() -> Pointer {
        Pointer::default()
    }

    pub fn parse(text: &str) -> Result<Pointer, PointerError> {
        if text.is_empty() {
            return Ok(Pointer::root());
        }
        let rest = text.strip_prefix('/').ok_or(PointerError::MissingSlash)?;
        let tokens = rest.split('/').map(unescape).collect::<Result<Vec<_>, _>>()?;
        Ok(Pointer { tokens })
    }

    /// Builds a pointer from raw (unescaped) keys and indices.
    pub fn from_tokens<I, S>(tokens: I) -> Pointer
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Pointer { tokens: tokens.into_iter().map(Into::into).collect() }
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn push(&mut self, token: impl Into<String>) {
        self.tokens.push(token.into());
    }

    /// The pointer to the containing value, or None for the root.
    pub fn parent(&self) -> Option<Pointer> {
        if self.tokens.is_empty() {
            return None;
        }
        Some(Pointer { tokens: self.tokens[..self.tokens.len() - 1].to_vec() })
    }

    /// The text of the first `depth` tokens, for error messages.
    fn prefix(&self, depth: usize) -> String {
        Pointer { tokens: self.tokens[..depth].to_vec() }.to_string()
    }

    pub fn resolve<'v>(&self, doc: &'v Value) -> Result<&'v Value, PointerError> {
        let mut current = doc;
        for (depth, token) in self.tokens.iter().enumerate() {
            let at = || self.prefix(depth + 1);
            current = match current {
                Value::Object(_) => current.get(token).ok_or_else(|| PointerError::NotFound { at: at() })?,
                Value::Array(items) => {
                    if token == "-" {
                        return Err(PointerError::NotFound { at: at() });
                    }
                    let index = parse_index(token, &at())?;
                    items.get(index).ok_or_else(|| PointerError::NotFound { at: at() })?
                }
                other => return Err(PointerError::NotAContainer { at: self.prefix(depth), kind: other.kind() }),
            };
        }
        Ok(current)
    }

    pub fn resolve_mut<'v>(&self, doc: &'v mut Value) -> Result<&'v mut Value, PointerError> {
        let mut current = doc;
        for (depth, token) in self.tokens.iter().enumerate() {
            let at = self.prefix(depth + 1);
            current = match current {
                Value::Object(members) => members
                    .iter_mut()
                    .find(|(k, _)| k == token)
                    .map(|(_, v)| v)
                    .ok_or(PointerError::NotFound { at })?,
                Value::Array(items) => {
                    if token == "-" {
                        return Err(PointerError::NotFound { at });
                    }
                    let index = parse_index(token, &at)?;
                    items.get_mut(index).ok_or(PointerError::NotFound { at })?
                }
                other => return Err(PointerError::NotAContainer { at: self.prefix(depth), kind: other.kind() }),
            };
        }
        Ok(current)
    }

    /// Like `resolve`, but None instead of an error.
    pub fn get<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        self.resolve(doc).ok()
    }

    /// Adds or replaces the value the pointer refers to (JSON Patch "add"):
    /// object members are created or replaced, array elements are inserted
    /// before the index, and `-` appends. Returns the replaced value, if any.
    /// The empty pointer replaces the whole document.
    pub fn set(&self, doc: &mut Value, value: Value) -> Result<Option<Value>, PointerError> {
        let (last, parent) = match self.tokens.split_last() {
            Some(split) => split,
            None => return Ok(Some(std::mem::replace(doc, value))),
        };
        let parent_ptr = Pointer { tokens: parent.to_vec() };
        let at = self.to_string();
        match parent_ptr.resolve_mut(doc)? {
            container @ Value::Object(_) => Ok(container.insert(last, value)),
            Value::Array(items) => {
                let index = if last == "-" { items.len() } else { parse_index(last, &at)? };
                if index > items.len() {
                    return Err(PointerError::NotFound { at });
                }
                items.insert(index, value);
                Ok(None)
            }
            other => Err(PointerError::NotAContainer { at: parent_ptr.to_string(), kind: other.kind() }),
        }
    }

    /// Removes and returns the value the pointer refers to.
    pub fn remove(&self, doc: &mut Value) -> Result<Value, PointerError> {
        let (last, parent) = self.tokens.split_last().ok_or(PointerError::RootNotAllowed)?;
        let parent_ptr = Pointer { tokens: parent.to_vec() };
        let at = self.to_string();
        match parent_ptr.resolve_mut(doc)? {
            Value::Object(members) => {
                let index = members.iter().position(|(k, _)| k == last).ok_or(PointerError::NotFound { at })?;
                Ok(members.remove(index).1)
            }
            Value::Array(items) => {
                let index = parse_index(last, &at)?;
                if index >= items.len() {
                    return Err(PointerError::NotFound { at });
                }
                Ok(items.remove(index))
            }
            other => Err(PointerError::NotAContainer { at: parent_ptr.to_string(), kind: other.kind() }),
        }
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            write!(f, "/{}", escape(token))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Pointer {
    type Err = PointerError;

    fn from_str(s: &str) -> Result<Pointer, PointerError> {
        Pointer::parse(s)
    }
}
