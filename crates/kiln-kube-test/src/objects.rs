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

use super::{kubelet, status, watch, Selectors, Shared};

pub(super) async fn list_pods(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath(ns): UrlPath<String>,
    Query(query): Query<Selectors>,
) -> Response {
    if query.watch == Some(true) {
        return watch::watch(shared, ns, query);
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
    Json(mut pod): Json<Pod>,
) -> Response {
    let name = pod.metadata.name.clone().unwrap_or_default();
    {
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let key = (ns.clone(), name.clone());
        if inner.pods.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                &format!("pods \"{name}\" already exists"),
            );
        }
        pod.metadata.namespace = Some(ns.clone());
        pod.metadata.uid = Some(format!("uid-{}", inner.version + 1));
        pod.status = Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        Shared::record(inner, &shared.events, "ADDED", &mut pod);
        inner.pods.insert(key, pod.clone());
    }
    kubelet::run(Arc::clone(&shared), ns, name);
    (StatusCode::CREATED, Json(pod)).into_response()
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
    let key = (ns, name.clone());
    let mut guard = shared.lock();
    let inner = &mut *guard;
    let Some(mut pod) = inner.pods.remove(&key) else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    if let Some(kill) = inner.kills.remove(&key) {
        let _ = kill.send(None);
    }
    Shared::record(inner, &shared.events, "DELETED", &mut pod);
    Json(pod).into_response()
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
