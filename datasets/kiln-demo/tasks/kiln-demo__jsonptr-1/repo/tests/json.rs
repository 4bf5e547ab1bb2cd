use jsonptr::{parse, Value};

#[test]
fn parses_scalars() {
    assert_eq!(parse("null").unwrap(), Value::Null);
    assert_eq!(parse(" true ").unwrap(), Value::Bool(true));
    assert_eq!(parse("-12.5e1").unwrap(), Value::Number(-125.0));
    assert_eq!(parse(r#""hi""#).unwrap(), Value::String("hi".into()));
}

#[test]
fn parses_nested_documents_in_order() {
    let doc = parse(r#"{"b": [1, {"c": null}], "a": {}}"#).unwrap();
    assert_eq!(doc.to_string(), r#"{"b":[1,{"c":null}],"a":{}}"#);
}

#[test]
fn string_escapes_round_trip() {
    let doc = parse(r#""tab\tquote\" slash\/ nl\n \u00e9 \ud83d\ude00""#).unwrap();
    assert_eq!(doc.as_str(), Some("tab\tquote\" slash/ nl\n é 😀"));
    assert_eq!(doc.to_string(), "\"tab\\tquote\\\" slash/ nl\\n é 😀\"");
}

#[test]
fn duplicate_keys_last_wins() {
    let doc = parse(r#"{"a": 1, "a": 2}"#).unwrap();
    assert_eq!(doc.to_string(), r#"{"a":2}"#);
}

#[test]
fn rejects_invalid_json() {
    for text in ["", "[1,]", "{\"a\" 1}", "01", "1.", "tru", "\"\\x\"", "[1] x", "\"\\ud800\"", "{'a': 1}"] {
        assert!(parse(text).is_err(), "{:?} should not parse", text);
    }
}

#[test]
fn error_reports_offset() {
    let err = parse("[1, 2,, 3]").unwrap_err();
    assert_eq!(err.offset, 6);
    assert_eq!(err.to_string(), "unexpected character at byte 6");
}

#[test]
fn deep_nesting_is_limited() {
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert!(parse(&deep).is_err());
    let ok = "[".repeat(100) + &"]".repeat(100);
    assert!(parse(&ok).is_ok());
}
