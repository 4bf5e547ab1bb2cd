//! A small JSON value type with RFC 6901 JSON Pointer support.

mod parse;
mod pointer;
mod value;

pub use parse::{parse, ParseError};
pub use pointer::{Pointer, PointerError};
pub use value::Value;

/// Every pointer that leads to a leaf (non-container or empty container)
/// of `doc`, in document order. Handy for diffing and for debugging.
pub fn leaf_pointers(doc: &Value) -> Vec<Pointer> {
    let mut out = Vec::new();
    walk(doc, &Pointer::root(), &mut out);
    out
}

fn walk(value: &Value, at: &Pointer, out: &mut Vec<Pointer>) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let mut child = at.clone();
                child.push(i.to_string());
                walk(item, &child, out);
            }
        }
        Value::Object(members) if !members.is_empty() => {
            for (key, item) in members {
                let mut child = at.clone();
                child.push(key.clone());
                walk(item, &child, out);
            }
        }
        _ => out.push(at.clone()),
    }
}
