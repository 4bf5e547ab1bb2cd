//! The generated OpenAPI document against the Codeset contract (`spec/codeset-openapi.json`,
//! a copy of `shared/spec/codeset-openapi.json`): every path, method, parameter, success
//! status and required field of the contract must be present with a compatible type.
//! Deliberate differences are listed below, each with its reason; the test fails when one
//! is no longer true, so the list stays honest.
use std::collections::BTreeSet;

use serde_json::Value;

/// Contract operations not served yet, and the issue that brings them.
const NOT_YET: &[(&str, &str, &str)] = &[];

/// Kiln's additions to the contract (extra operations; extra optional response fields
/// are allowed everywhere and need no entry).
const ADDITIONS: &[(&str, &str, &str)] = &[
    (
        "post",
        "/auth/token",
        "exchange an API key for a JWT pair: sign-in without GitHub for self-hosters",
    ),
    (
        "get",
        "/auth/github/authorize",
        "issues the self-verifying OAuth state (and GitHub's authorize URL) that /auth/github checks",
    ),
];

/// Contract fields whose type Kiln deliberately serves differently.
const TYPE_DIFFERENCES: &[(&str, &str)] = &[];

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// The JSON types a schema admits, `null` left out; empty means "anything".
fn kinds(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut out = BTreeSet::new();
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            for o in options {
                out.extend(kinds(doc, o));
            }
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) => {
            out.insert(t.clone());
        }
        Some(Value::Array(ts)) => {
            out.extend(ts.iter().filter_map(Value::as_str).map(str::to_string))
        }
        _ => {
            if schema.get("enum").is_some() || schema.get("const").is_some() {
                out.insert("string".into());
            } else if schema.get("properties").is_some() {
                out.insert("object".into());
            }
        }
    }
    out.remove("null");
    out
}

fn compatible(contract: &BTreeSet<String>, ours: &BTreeSet<String>) -> bool {
    if contract.is_empty() {
        return true;
    }
    contract
        .iter()
        .all(|k| ours.contains(k) || (k == "number" && ours.contains("integer")))
}

/// Checks that every required field of the contract's object schema is in ours, with a
/// compatible type, recursing into nested objects and arrays of objects.
fn check_object(
    contract: &Value,
    c: &Value,
    ours: &Value,
    o: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let c = resolve(contract, c);
    let o = resolve(ours, o);
    let c_props = c.get("properties").and_then(Value::as_object);
    let Some(c_props) = c_props else { return };
    let required: BTreeSet<&str> = c
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let o_required: BTreeSet<&str> = o
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, c_prop) in c_props {
        let field = format!("{at}.{name}");
        let Some(o_prop) = o.get("properties").and_then(|p| p.get(name)) else {
            if required.contains(name.as_str()) {
                problems.push(format!("{field}: required by the contract, missing"));
            }
            continue;
        };
        if required.contains(name.as_str())
            && !o_required.contains(name.as_str())
            && at.contains("response")
        {
            problems.push(format!(
                "{field}: required in the contract's response, optional in ours"
            ));
        }
        let (ck, ok) = (kinds(contract, c_prop), kinds(ours, o_prop));
        if !compatible(&ck, &ok) && !TYPE_DIFFERENCES.iter().any(|(f, _)| field.ends_with(f)) {
            problems.push(format!("{field}: contract type {ck:?}, ours {ok:?}"));
        }
        if ck.contains("object") {
            check_object(contract, c_prop, ours, o_prop, &field, problems);
        }
        if ck.contains("array") {
            let (ci, oi) = (
                resolve(contract, c_prop).get("items"),
                resolve(ours, o_prop).get("items"),
            );
            if let (Some(ci), Some(oi)) = (ci, oi) {
                check_object(contract, ci, ours, oi, &format!("{field}[]"), problems);
            }
        }
    }
}

fn json_schema(op: &Value, status: Option<&str>) -> Option<Value> {
    let content = match status {
        Some(s) => op["responses"].get(s)?.get("content")?,
        None => op.get("requestBody")?.get("content")?,
    };
    content
        .get("application/json")
        .and_then(|c| c.get("schema"))
        .cloned()
}

/// Every way `ours` departs from `contract`, and how many operations were compared.
fn drift(contract: &Value, ours: &Value) -> (usize, Vec<String>) {
    let (contract, ours) = (contract.clone(), ours.clone());
    let mut problems = Vec::new();
    let mut checked = 0;

    for (path, methods) in contract["paths"].as_object().expect("paths") {
        for (method, c_op) in methods.as_object().expect("methods") {
            let deferred = NOT_YET.iter().any(|(m, p, _)| *m == method && *p == path);
            let Some(o_op) = ours["paths"].get(path).and_then(|p| p.get(method)) else {
                if !deferred {
                    problems.push(format!("{} {path}: missing", method.to_uppercase()));
                }
                continue;
            };
            if deferred {
                problems.push(format!(
                    "{} {path}: served now; remove it from NOT_YET",
                    method.to_uppercase()
                ));
            }
            checked += 1;
            let op = format!("{} {path}", method.to_uppercase());

            // Parameters: same name and place, required where the contract requires.
            for c_param in c_op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (name, place) = (
                    c_param["name"].as_str().unwrap_or(""),
                    c_param["in"].as_str().unwrap_or(""),
                );
                let found = o_op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .and_then(|ps| {
                        ps.iter().find(|p| {
                            p["name"].as_str() == Some(name) && p["in"].as_str() == Some(place)
                        })
                    });
                match found {
                    None => problems.push(format!("{op}: parameter {place}.{name} missing")),
                    Some(o_param) => {
                        let c_req = c_param["required"].as_bool().unwrap_or(false);
                        if c_req != o_param["required"].as_bool().unwrap_or(false) {
                            problems.push(format!(
                                "{op}: parameter {name} required={c_req} in the contract"
                            ));
                        }
                        let (ck, ok) = (
                            kinds(&contract, &c_param["schema"]),
                            kinds(&ours, &o_param["schema"]),
                        );
                        if !compatible(&ck, &ok) {
                            problems
                                .push(format!("{op}: parameter {name} type {ck:?} vs ours {ok:?}"));
                        }
                    }
                }
            }

            // The success status, and the request and response bodies' fields.
            let success: Vec<&String> = c_op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .filter(|s| s.starts_with('2'))
                .collect();
            for status in success {
                if o_op["responses"].get(status).is_none() {
                    problems.push(format!("{op}: no {status} response"));
                } else if let (Some(c), Some(o)) = (
                    json_schema(c_op, Some(status)),
                    json_schema(o_op, Some(status)),
                ) {
                    let (ck, ok) = (kinds(&contract, &c), kinds(&ours, &o));
                    // The download answers with gzip bytes, not the contract's JSON `{}`.
                    let binary = status == "200" && path.ends_with("/download");
                    if !binary && !compatible(&ck, &ok) {
                        problems.push(format!("{op}: {status} body type {ck:?} vs ours {ok:?}"));
                    }
                    check_object(
                        &contract,
                        &c,
                        &ours,
                        &o,
                        &format!("{op} response"),
                        &mut problems,
                    );
                }
            }
            match (json_schema(c_op, None), json_schema(o_op, None)) {
                (Some(c), Some(o)) => check_object(
                    &contract,
                    &c,
                    &ours,
                    &o,
                    &format!("{op} request"),
                    &mut problems,
                ),
                (Some(_), None) => problems.push(format!("{op}: request body missing")),
                _ => {}
            }
            let c_secured = c_op.get("security").is_some();
            let o_secured = o_op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
            if c_secured != o_secured {
                problems.push(format!(
                    "{op}: authentication required={c_secured} in the contract"
                ));
            }
        }
    }
    for (method, path, why) in ADDITIONS {
        if ours["paths"]
            .get(path)
            .and_then(|p| p.get(method))
            .is_none()
        {
            problems.push(format!("addition {method} {path} ({why}) is not served"));
        }
    }

    (checked, problems)
}

#[test]
fn generated_openapi_covers_the_contract() {
    let contract = load(include_str!("../../../spec/codeset-openapi.json"));
    let ours = serde_json::to_value(kiln_api::openapi()).expect("serializes");
    assert!(ours["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let (checked, problems) = drift(&contract, &ours);
    println!("checked {checked} operations against the contract");
    println!("deliberate differences:");
    for (m, p, why) in NOT_YET {
        println!("  not yet: {} {p} ({why})", m.to_uppercase());
    }
    for (m, p, why) in ADDITIONS {
        println!("  addition: {} {p}: {why}", m.to_uppercase());
    }
    assert!(checked >= 9, "checked only {checked} operations");
    assert!(
        problems.is_empty(),
        "the generated OpenAPI drifts from the contract:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_check_catches_drift() {
    let contract = load(include_str!("../../../spec/codeset-openapi.json"));
    let mut ours = serde_json::to_value(kiln_api::openapi()).expect("serializes");
    let schemas = &mut ours["components"]["schemas"];
    schemas["SampleListResponse"]["properties"]
        .as_object_mut()
        .expect("props")
        .remove("has_more");
    schemas["Sample"]["properties"]["fail_to_pass"] = serde_json::json!({"type": "string"});
    let params = ours["paths"]["/samples"]["get"]["parameters"]
        .as_array_mut()
        .expect("params");
    params.retain(|p| p["name"] != "search");
    ours["paths"]
        .as_object_mut()
        .expect("paths")
        .remove("/datasets");
    let (_, problems) = drift(&contract, &ours);
    let text = problems.join("\n");
    for expected in [
        "has_more: required by the contract, missing",
        "fail_to_pass: contract type",
        "parameter query.search missing",
        "GET /datasets: missing",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not reported in:\n{text}"
        );
    }
}

#[test]
fn contract_copy_matches_shared_spec_when_present() {
    // CI clones the repository with shared/ beside it: keep the vendored copy in sync.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/spec/codeset-openapi.json");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        assert_eq!(
            load(&text),
            load(include_str!("../../../spec/codeset-openapi.json")),
            "spec/ is stale: copy it again"
        );
    }
}
