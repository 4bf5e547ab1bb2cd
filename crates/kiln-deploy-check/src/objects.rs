//! Kubernetes objects into their API types. `k8s-openapi`'s types ignore fields they do
//! not know, as the API server does unless asked to be strict; so each object is parsed,
//! written back, and every key of the original must still be there.
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use k8s_openapi::api::{apps, core, networking, policy, rbac};

/// Parses `object` as the type its `apiVersion` and `kind` name; an unknown kind, a
/// value of the wrong type or a field the type does not have is an error.
pub fn check_object(object: &Value) -> Result<(), String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(object),
        ("v1", "Service") => round_trip::<core::v1::Service>(object),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(&unwrapped_secret(object)),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(object),
        ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(object),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(object),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(object)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<policy::v1::PodDisruptionBudget>(object)
        }
        _ => Err(format!(
            "unknown object {api_version:?} {kind:?} (add its type to objects.rs)"
        )),
    }
}

/// `object` with line breaks taken out of its `data` values: kustomize wraps long base64
/// values, which the API server (Go's decoder skips `\r` and `\n`) accepts and
/// `k8s-openapi` does not.
fn unwrapped_secret(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(text.replace(['\n', '\r'], ""));
            }
        }
    }
    object
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    // serde_path_to_error would name the field; the message of a wrong type is enough.
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let written = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let dropped = dropped_keys(object, &written);
    if dropped.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "fields the type does not have: {}",
            dropped.join(", ")
        ))
    }
}

/// The paths (`spec.template.spec.containers[0].foo`) of keys in `original` that
/// `written` lacks.
pub fn dropped_keys(original: &Value, written: &Value) -> Vec<String> {
    let mut dropped = Vec::new();
    walk(original, written, "", &mut dropped);
    dropped
}

fn walk(original: &Value, written: &Value, at: &str, dropped: &mut Vec<String>) {
    match (original, written) {
        (Value::Object(original), Value::Object(written)) => {
            for (key, value) in original {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match written.get(key) {
                    Some(w) => walk(value, w, &path, dropped),
                    None => dropped.push(path),
                }
            }
        }
        (Value::Array(original), Value::Array(written)) => {
            for (i, value) in original.iter().enumerate() {
                let path = format!("{at}[{i}]");
                match written.get(i) {
                    Some(w) => walk(value, w, &path, dropped),
                    None => dropped.push(path),
                }
            }
        }
        // An object or list written as something else lost its keys.
        (Value::Object(_) | Value::Array(_), _) => dropped.push(at.to_string()),
        // Scalars may be written back normalized (a port number as a number).
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kiln", "namespace": "kiln"}, "spec": spec})
    }

    #[test]
    fn a_valid_object_passes() {
        let ok = service(json!({"selector": {"a": "b"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}));
        assert_eq!(check_object(&ok), Ok(()));
    }

    #[test]
    fn an_unknown_or_misplaced_field_fails() {
        let typo = service(json!({"ports": [{"port": 80, "targetprot": 8000}]}));
        let err = check_object(&typo).unwrap_err();
        assert!(err.contains("spec.ports[0].targetprot"), "{err}");
        let misplaced = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kiln", "replicas": 2}});
        let err = check_object(&misplaced).unwrap_err();
        assert!(err.contains("metadata.replicas"), "{err}");
    }

    #[test]
    fn a_wrong_type_or_kind_fails() {
        let wrong = service(json!({"ports": [{"port": "eighty"}]}));
        assert!(check_object(&wrong).is_err());
        let unknown = json!({"apiVersion": "v1", "kind": "Pdo", "metadata": {"name": "x"}});
        assert!(check_object(&unknown)
            .unwrap_err()
            .contains("unknown object"));
        let mismatch = json!({"apiVersion": "apps/v1", "kind": "Service", "metadata": {}});
        assert!(check_object(&mismatch).is_err());
    }

    #[test]
    fn secrets_may_wrap_their_base64_as_kustomize_writes_it() {
        let secret = |data: &str| {
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "s"}, "data": {"url": data}})
        };
        assert_eq!(check_object(&secret("aGVsbG8g\nd29ybGQ=")), Ok(()));
        assert!(check_object(&secret("not base64!")).is_err());
    }
}
