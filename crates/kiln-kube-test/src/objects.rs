//! The objects' handlers: Pods (create starts the test kubelet, list with `watch=true`
//! is a watch), Secrets and NetworkPolicies (stored as given).

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::{controller, kubelet, status, watch, Inner, Selectors, Shared};

pub(super) async fn list_pods(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(query): Query<Selectors>,
) -> Response {
    if query.watch == Some(true) {
        return watch::watch(shared, "pods", ns, query);
    }
    let inner = shared.lock();
    let items: Vec<&Pod> = inner
        .pods
        .iter()
        .filter(|((n, _), pod)| *n == ns && query.matches(&pod.metadata))
        .map(|(_, pod)| pod)
        .collect();
    Json(json!({"kind": "PodList", "apiVersion": "v1",
        "metadata": {"resourceVersion": inner.version.to_string()}, "items": items}))
    .into_response()
}

pub(super) async fn create_pod(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Json(pod): Json<Pod>,
) -> Response {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut guard = shared.lock();
    match insert_pod(&shared, &mut guard, &ns, pod) {
        Some(pod) => (StatusCode::CREATED, Json(pod)).into_response(),
        None => status(
            409,
            "AlreadyExists",
            &format!("pods \"{name}\" already exists"),
        ),
    }
}

/// Stores a new Pod (Pending) and hands it to the kubelet; `None` if the name is taken.
pub(super) fn insert_pod(
    shared: &Arc<Shared>,
    inner: &mut Inner,
    ns: &str,
    mut pod: Pod,
) -> Option<Pod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let key = (ns.to_string(), name.clone());
    if inner.pods.contains_key(&key) {
        return None;
    }
    pod.metadata.namespace = Some(ns.to_string());
    pod.metadata.uid = Some(format!("uid-{}", inner.version + 1));
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    Shared::record(inner, &shared.events, "ADDED", &mut pod);
    inner.pods.insert(key, pod.clone());
    // It only spawns: the kubelet takes the lock once this one is released.
    kubelet::run(Arc::clone(shared), ns.to_string(), name);
    Some(pod)
}

/// Removes a Pod, ending its process.
pub(super) fn remove_pod(shared: &Shared, inner: &mut Inner, ns: &str, name: &str) -> Option<Pod> {
    let key = (ns.to_string(), name.to_string());
    let mut pod = inner.pods.remove(&key)?;
    if let Some(kill) = inner.kills.remove(&key) {
        let _ = kill.send(None);
    }
    Shared::record(inner, &shared.events, "DELETED", &mut pod);
    controller::pod_changed(inner, shared, ns, name);
    Some(pod)
}

pub(super) async fn get_pod(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match shared.lock().pods.get(&(ns, name.clone())) {
        Some(pod) => Json(pod).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

pub(super) async fn delete_pod(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    let mut guard = shared.lock();
    match remove_pod(&shared, &mut guard, &ns, &name) {
        Some(pod) => Json(pod).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

/// `PATCH` with a JSON merge patch (`application/merge-patch+json`, RFC 7386): what
/// Kiln uses to take a warm Pod (its id annotation, its warm label removed).
pub(super) async fn patch_pod(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let merge = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/merge-patch+json"));
    if !merge {
        return status(415, "UnsupportedMediaType", "only merge patches are served");
    }
    let Ok(patch) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return status(400, "BadRequest", "the patch is not JSON");
    };
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let key = (ns.clone(), name.clone());
    let Some(pod) = inner.pods.get(&key) else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    let mut value = serde_json::to_value(pod).unwrap_or_default();
    merge_patch(&mut value, &patch);
    let Ok(mut pod) = serde_json::from_value::<Pod>(value) else {
        return status(422, "Invalid", "the patched Pod is not a Pod");
    };
    Shared::record(inner, &shared.events, "MODIFIED", &mut pod);
    inner.pods.insert(key, pod.clone());
    Json(pod).into_response()
}

pub(super) fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

pub(super) async fn list_policies(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(query): Query<Selectors>,
) -> Response {
    let inner = shared.lock();
    let items: Vec<&NetworkPolicy> = inner
        .policies
        .iter()
        .filter(|((n, _), p)| *n == ns && query.matches(&p.metadata))
        .map(|(_, p)| p)
        .collect();
    Json(
        json!({"kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1",
        "metadata": {"resourceVersion": inner.version.to_string()}, "items": items}),
    )
    .into_response()
}

pub(super) async fn create_policy(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Json(mut policy): Json<NetworkPolicy>,
) -> Response {
    let name = policy.metadata.name.clone().unwrap_or_default();
    let mut inner = shared.lock();
    let key = (ns.clone(), name.clone());
    if inner.policies.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("networkpolicies \"{name}\" already exists"),
        );
    }
    inner.version += 1;
    policy.metadata.namespace = Some(ns);
    policy.metadata.resource_version = Some(inner.version.to_string());
    inner.policies.insert(key, policy.clone());
    (StatusCode::CREATED, Json(policy)).into_response()
}

pub(super) async fn get_policy(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match shared.lock().policies.get(&(ns, name.clone())) {
        Some(policy) => Json(policy).into_response(),
        None => status(
            404,
            "NotFound",
            &format!("networkpolicies \"{name}\" not found"),
        ),
    }
}

pub(super) async fn delete_policy(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match shared.lock().policies.remove(&(ns, name.clone())) {
        Some(policy) => Json(policy).into_response(),
        None => status(
            404,
            "NotFound",
            &format!("networkpolicies \"{name}\" not found"),
        ),
    }
}

pub(super) async fn list_secrets(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(query): Query<Selectors>,
) -> Response {
    let inner = shared.lock();
    let items: Vec<&Secret> = inner
        .secrets
        .iter()
        .filter(|((n, _), s)| *n == ns && query.matches(&s.metadata))
        .map(|(_, s)| s)
        .collect();
    Json(json!({"kind": "SecretList", "apiVersion": "v1",
        "metadata": {"resourceVersion": inner.version.to_string()}, "items": items}))
    .into_response()
}

pub(super) async fn create_secret(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Json(mut secret): Json<Secret>,
) -> Response {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut inner = shared.lock();
    let key = (ns.clone(), name.clone());
    if inner.secrets.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    inner.version += 1;
    secret.metadata.namespace = Some(ns);
    secret.metadata.resource_version = Some(inner.version.to_string());
    inner.secrets.insert(key, secret.clone());
    (StatusCode::CREATED, Json(secret)).into_response()
}

pub(super) async fn get_secret(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match shared.lock().secrets.get(&(ns, name.clone())) {
        Some(secret) => Json(secret).into_response(),
        None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}

pub(super) async fn delete_secret(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match shared.lock().secrets.remove(&(ns, name.clone())) {
        Some(secret) => Json(secret).into_response(),
        None => status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}
