use jsonptr::{parse, Pointer, PointerError, Value};

fn ptr(text: &str) -> Pointer {
    Pointer::parse(text).unwrap()
}

#[test]
fn set_adds_and_replaces_members() {
    let mut doc = parse(r#"{"a": 1}"#).unwrap();
    assert_eq!(ptr("/b").set(&mut doc, Value::from(true)).unwrap(), None);
    assert_eq!(ptr("/a").set(&mut doc, Value::from("x")).unwrap(), Some(Value::Number(1.0)));
    assert_eq!(doc.to_string(), r#"{"a":"x","b":true}"#);
}

#[test]
fn set_inserts_into_arrays() {
    let mut doc = parse("[1, 3]").unwrap();
    ptr("/1").set(&mut doc, Value::from(2.0)).unwrap();
    ptr("/-").set(&mut doc, Value::from(4.0)).unwrap();
    ptr("/4").set(&mut doc, Value::from(5.0)).unwrap();
    assert_eq!(doc.to_string(), "[1,2,3,4,5]");
    assert_eq!(ptr("/9").set(&mut doc, Value::Null), Err(PointerError::NotFound { at: "/9".into() }));
}

#[test]
fn set_root_replaces_document() {
    let mut doc = parse("[1]").unwrap();
    let old = Pointer::root().set(&mut doc, Value::Null).unwrap();
    assert_eq!(old, Some(parse("[1]").unwrap()));
    assert!(doc.is_null());
}

#[test]
fn set_needs_existing_parent() {
    let mut doc = parse(r#"{"a": 1}"#).unwrap();
    assert!(matches!(ptr("/x/y").set(&mut doc, Value::Null), Err(PointerError::NotFound { .. })));
    assert!(matches!(ptr("/a/y").set(&mut doc, Value::Null), Err(PointerError::NotAContainer { .. })));
}

#[test]
fn remove_members_and_elements() {
    let mut doc = parse(r#"{"a": [1, 2, 3], "b": 4}"#).unwrap();
    assert_eq!(ptr("/a/1").remove(&mut doc).unwrap(), Value::Number(2.0));
    assert_eq!(ptr("/b").remove(&mut doc).unwrap(), Value::Number(4.0));
    assert_eq!(doc.to_string(), r#"{"a":[1,3]}"#);
    assert_eq!(Pointer::root().remove(&mut doc), Err(PointerError::RootNotAllowed));
    assert!(ptr("/a/5").remove(&mut doc).is_err());
}

#[test]
fn resolve_mut_edits_in_place() {
    let mut doc = parse(r#"{"cfg": {"port": 80}}"#).unwrap();
    *ptr("/cfg/port").resolve_mut(&mut doc).unwrap() = Value::from(8080.0);
    assert_eq!(doc.to_string(), r#"{"cfg":{"port":8080}}"#);
}

#[test]
fn keys_with_slashes_can_be_edited() {
    let mut doc = parse(r#"{"paths": {}}"#).unwrap();
    let pointer = Pointer::from_tokens(["paths", "/usr/bin"]);
    pointer.set(&mut doc, Value::from("bin")).unwrap();
    assert_eq!(doc.to_string(), r#"{"paths":{"/usr/bin":"bin"}}"#);
    assert_eq!(ptr("/paths/~1usr~1bin").get(&doc).and_then(Value::as_str), Some("bin"));
}
