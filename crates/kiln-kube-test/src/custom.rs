//! kubernetes-sigs/agent-sandbox's resources (served when `ClusterOptions::agent_sandbox`):
//! discovery, create / get / list / watch / delete, and the status subresource, stored
//! as JSON with resourceVersions and watch events like Pods. `controller.rs` realizes
//! them.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{controller, meta_of, status, watch, Inner, Selectors, Shared};

/// Sandbox's group.
pub(super) const SANDBOX_GROUP: &str = "agents.x-k8s.io";
/// SandboxTemplate's, SandboxWarmPool's and SandboxClaim's group.
pub(super) const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
/// The one version served.
pub(super) const VERSION: &str = "v1beta1";

/// (group, plural, kind) of each resource served.
const KINDS: [(&str, &str, &str); 4] = [
    (SANDBOX_GROUP, "sandboxes", "Sandbox"),
    (EXTENSIONS_GROUP, "sandboxtemplates", "SandboxTemplate"),
    (EXTENSIONS_GROUP, "sandboxwarmpools", "SandboxWarmPool"),
    (EXTENSIONS_GROUP, "sandboxclaims", "SandboxClaim"),
];

/// The served resource at this path: (plural, kind, apiVersion).
fn served(
    shared: &Shared,
    group: &str,
    version: &str,
    plural: &str,
) -> Option<(&'static str, &'static str, String)> {
    if !shared.options.agent_sandbox || version != VERSION {
        return None;
    }
    KINDS
        .iter()
        .find(|(g, p, _)| *g == group && *p == plural)
        .map(|(g, p, k)| (*p, *k, format!("{g}/{VERSION}")))
}

fn not_served(plural: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("the server could not find the requested resource ({plural})"),
    )
}

fn not_found(plural: &str, name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("{plural}.{VERSION} \"{name}\" not found"),
    )
}

/// `GET /apis/{group}/{version}`: the group's APIResourceList.
pub(super) async fn resources(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version)): UrlPath<(String, String)>,
) -> Response {
    if !shared.options.agent_sandbox || version != VERSION {
        return not_served(&group);
    }
    let verbs = json!(["create", "delete", "get", "list", "watch"]);
    let mut items = Vec::new();
    for (_, plural, kind) in KINDS.iter().filter(|(g, _, _)| *g == group) {
        items.push(json!({"name": plural, "singularName": kind.to_lowercase(),
            "namespaced": true, "kind": kind, "verbs": verbs}));
        items.push(
            json!({"name": format!("{plural}/status"), "singularName": "",
            "namespaced": true, "kind": kind, "verbs": ["get", "update"]}),
        );
    }
    if items.is_empty() {
        return not_served(&group);
    }
    Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"), "resources": items}))
    .into_response()
}

type Path4 = UrlPath<(String, String, String, String)>;
type Path5 = UrlPath<(String, String, String, String, String)>;

pub(super) async fn list(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural)): Path4,
    Query(query): Query<Selectors>,
) -> Response {
    let Some((plural, kind, api_version)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    if query.watch == Some(true) {
        return watch::watch(shared, plural, ns, query);
    }
    let inner = shared.lock();
    let items: Vec<&Value> = inner
        .custom
        .iter()
        .filter(|((p, n, _), v)| *p == plural && *n == ns && query.matches(&meta_of(v)))
        .map(|(_, v)| v)
        .collect();
    Json(
        json!({"kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": {"resourceVersion": inner.version.to_string()}, "items": items}),
    )
    .into_response()
}

pub(super) async fn create(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural)): Path4,
    Json(object): Json<Value>,
) -> Response {
    let Some((plural, kind, api_version)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    if object["kind"] != kind || object["apiVersion"] != api_version.as_str() {
        return status(
            400,
            "BadRequest",
            "kind or apiVersion does not match the path",
        );
    }
    let name = meta_of(&object).name.unwrap_or_default();
    if name.is_empty() || !object["spec"].is_object() {
        return status(422, "Invalid", "metadata.name and spec are required");
    }
    let mut guard = shared.lock();
    let inner = &mut *guard;
    if inner
        .custom
        .contains_key(&(plural, ns.clone(), name.clone()))
    {
        return status(
            409,
            "AlreadyExists",
            &format!("{plural}.{group} \"{name}\" already exists"),
        );
    }
    let stored = insert(inner, &shared, plural, &ns, object);
    controller::created(&shared, inner, plural, &ns, &name);
    (StatusCode::CREATED, Json(stored)).into_response()
}

pub(super) async fn get(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural, name)): Path5,
) -> Response {
    let Some((plural, _, _)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    match shared.lock().custom.get(&(plural, ns, name.clone())) {
        Some(object) => Json(object).into_response(),
        None => not_found(plural, &name),
    }
}

pub(super) async fn delete(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural, name)): Path5,
) -> Response {
    let Some((plural, _, _)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    let mut guard = shared.lock();
    match remove(&mut guard, &shared, plural, &ns, &name) {
        Some(object) => Json(object).into_response(),
        None => not_found(plural, &name),
    }
}

/// `PATCH` (a JSON merge patch) of the spec and metadata: the status is the
/// subresource's. A claim's moved `shutdownTime` re-arms its expiry.
pub(super) async fn patch(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural, name)): Path5,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some((plural, _, _)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    let merge = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/merge-patch+json"));
    if !merge {
        return status(415, "UnsupportedMediaType", "only merge patches are served");
    }
    let Ok(mut patch) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the patch is not JSON");
    };
    if let Some(fields) = patch.as_object_mut() {
        fields.remove("status");
    }
    let mut guard = shared.lock();
    let changed = update(&mut guard, &shared, plural, &ns, &name, |v| {
        super::objects::merge_patch(v, &patch);
    });
    match changed {
        Some(object) => {
            controller::patched(&shared, plural, &ns, &name, &object);
            Json(object).into_response()
        }
        None => not_found(plural, &name),
    }
}

/// `PUT …/status`: replaces the status only (the subresource's rule).
pub(super) async fn put_status(
    AxumState(shared): AxumState<Arc<Shared>>,
    UrlPath((group, version, ns, plural, name)): Path5,
    Json(object): Json<Value>,
) -> Response {
    let Some((plural, _, _)) = served(&shared, &group, &version, &plural) else {
        return not_served(&plural);
    };
    let mut guard = shared.lock();
    let new_status = object["status"].clone();
    match update(&mut guard, &shared, plural, &ns, &name, |v| {
        v["status"] = new_status;
    }) {
        Some(object) => Json(object).into_response(),
        None => not_found(plural, &name),
    }
}

/// Stores a new object: namespace, uid, resourceVersion, an empty status; ADDED.
pub(super) fn insert(
    inner: &mut Inner,
    shared: &Shared,
    plural: &'static str,
    ns: &str,
    mut object: Value,
) -> Value {
    inner.version += 1;
    let name = meta_of(&object).name.unwrap_or_default();
    object["metadata"]["namespace"] = json!(ns);
    object["metadata"]["uid"] = json!(format!("uid-{}", inner.version));
    object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    inner
        .custom
        .insert((plural, ns.to_string(), name), object.clone());
    Shared::push(inner, &shared.events, "ADDED", plural, object.clone());
    object
}

/// Changes a stored object; MODIFIED. `None` when it is not there.
pub(super) fn update(
    inner: &mut Inner,
    shared: &Shared,
    plural: &'static str,
    ns: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> Option<Value> {
    let key = (plural, ns.to_string(), name.to_string());
    let mut object = inner.custom.get(&key)?.clone();
    change(&mut object);
    inner.version += 1;
    object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    inner.custom.insert(key, object.clone());
    Shared::push(inner, &shared.events, "MODIFIED", plural, object.clone());
    Some(object)
}

/// Deletes a stored object (DELETED) and what it owns (the controller's cascade).
pub(super) fn remove(
    inner: &mut Inner,
    shared: &Shared,
    plural: &str,
    ns: &str,
    name: &str,
) -> Option<Value> {
    let (_, plural, _) = KINDS.iter().find(|(_, p, _)| *p == plural)?;
    let mut object = inner
        .custom
        .remove(&(*plural, ns.to_string(), name.to_string()))?;
    inner.version += 1;
    object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    Shared::push(inner, &shared.events, "DELETED", plural, object.clone());
    controller::deleted(inner, shared, plural, ns, &object);
    Some(object)
}
