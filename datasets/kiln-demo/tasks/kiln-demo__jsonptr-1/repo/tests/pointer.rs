use jsonptr::{leaf_pointers, parse, Pointer, PointerError, Value};

const RFC_EXAMPLE: &str = r#"{
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    "k\"l": 6,
    " ": 7,
    "m~n": 8
}"#;

fn at<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    Pointer::parse(pointer).unwrap().resolve(doc).unwrap()
}

#[test]
fn rfc6901_examples() {
    let doc = parse(RFC_EXAMPLE).unwrap();
    assert_eq!(at(&doc, ""), &doc);
    assert_eq!(at(&doc, "/foo").to_string(), r#"["bar","baz"]"#);
    assert_eq!(at(&doc, "/foo/0").as_str(), Some("bar"));
    let expected = [("/", 0.0), ("/a~1b", 1.0), ("/c%d", 2.0), ("/e^f", 3.0), ("/g|h", 4.0)];
    for (pointer, n) in expected {
        assert_eq!(at(&doc, pointer).as_f64(), Some(n), "{}", pointer);
    }
    assert_eq!(at(&doc, "/i\\j").as_f64(), Some(5.0));
    assert_eq!(at(&doc, "/k\"l").as_f64(), Some(6.0));
    assert_eq!(at(&doc, "/ ").as_f64(), Some(7.0));
    assert_eq!(at(&doc, "/m~0n").as_f64(), Some(8.0));
}

#[test]
fn pointer_must_start_with_slash() {
    assert_eq!(Pointer::parse("foo"), Err(PointerError::MissingSlash));
}

#[test]
fn bad_escapes_are_rejected() {
    for text in ["/a~", "/a~2", "/~x"] {
        assert!(matches!(Pointer::parse(text), Err(PointerError::BadEscape { .. })), "{}", text);
    }
}

#[test]
fn display_escapes_tokens() {
    let pointer = Pointer::from_tokens(["a/b", "m~n", "0"]);
    assert_eq!(pointer.to_string(), "/a~1b/m~0n/0");
    assert_eq!(Pointer::parse("/a~1b/m~0n/0").unwrap(), pointer);
}

#[test]
fn array_index_rules() {
    let doc = parse("[10, 20, 30]").unwrap();
    assert_eq!(at(&doc, "/2").as_f64(), Some(30.0));
    for bad in ["/01", "/-1", "/1.0", "/x"] {
        let err = Pointer::parse(bad).unwrap().resolve(&doc).unwrap_err();
        assert!(matches!(err, PointerError::BadIndex { .. }), "{}: {:?}", bad, err);
    }
    let err = Pointer::parse("/3").unwrap().resolve(&doc).unwrap_err();
    assert_eq!(err, PointerError::NotFound { at: "/3".into() });
    assert!(Pointer::parse("/-").unwrap().get(&doc).is_none());
}

#[test]
fn errors_name_the_failing_prefix() {
    let doc = parse(r#"{"a": {"b": 1}}"#).unwrap();
    let err = Pointer::parse("/a/x/y").unwrap().resolve(&doc).unwrap_err();
    assert_eq!(err, PointerError::NotFound { at: "/a/x".into() });
    let err = Pointer::parse("/a/b/c").unwrap().resolve(&doc).unwrap_err();
    assert_eq!(err, PointerError::NotAContainer { at: "/a/b".into(), kind: "number" });
    assert_eq!(err.to_string(), "\"/a/b\" is a number, not a container");
}

#[test]
fn parent_and_push() {
    let mut pointer = Pointer::parse("/a/b").unwrap();
    assert_eq!(pointer.parent().unwrap().to_string(), "/a");
    pointer.push("c/d");
    assert_eq!(pointer.to_string(), "/a/b/c~1d");
    assert!(Pointer::root().parent().is_none());
}

#[test]
fn leaf_pointers_in_document_order() {
    let doc = parse(r#"{"a": [1, {"b/c": true}], "d": {}, "e": []}"#).unwrap();
    let leaves: Vec<String> = leaf_pointers(&doc).iter().map(|p| p.to_string()).collect();
    assert_eq!(leaves, ["/a/0", "/a/1/b~1c", "/d", "/e"]);
}
