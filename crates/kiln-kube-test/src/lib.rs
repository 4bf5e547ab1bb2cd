//! A test Kubernetes API server: the subset Kiln's Kubernetes backend uses — discovery,
//! Pods (create, get, list and watch by label and name, merge patch, delete),
//! NetworkPolicies, Secrets, and (`ClusterOptions::agent_sandbox`) agent-sandbox's
//! Sandbox, SandboxTemplate, SandboxWarmPool and SandboxClaim with a stand-in of its
//! controllers (`controller.rs`) — with
//! resourceVersions, bookmarks, 410 Gone for a compacted version, and injected faults
//! (an HTTP status on the next N calls, watches that break). Its test kubelet "runs" each
//! Pod: schedules it against a memory capacity, fails images it is told are missing, and
//! starts the main container's command when it is the injected agent — the real static
//! `kiln-agent`, as a process of this machine on the Pod's own loopback address
//! (`127.0.1.N`, all of 127/8 is this host).
//!
//! It is a stand-in for tests, not a cluster: no container, no image, no isolation.
//! Kiln's own requests, readiness, failure handling, agent injection and the agent
//! protocol are real; what a kubelet and a container runtime do is imitated.

mod controller;
mod custom;
mod kubelet;
mod objects;
mod rootfs;
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State as AxumState};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{Pod, PodStatus, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use objects::{
    create_pod, create_policy, create_secret, delete_pod, delete_policy, delete_secret, get_pod,
    get_policy, get_secret, list_pods, list_policies, list_secrets, patch_pod,
};

/// What the test cluster is like.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The static agent the kubelet runs for `/.kiln/agent`.
    pub agent_binary: PathBuf,
    /// The only image whose init container "copies the agent" successfully.
    pub agent_image: String,
    /// Images whose pull fails (`ErrImagePull`, then `ImagePullBackOff`).
    pub missing_images: Vec<String>,
    /// The node's memory: a Pod requesting more is `Unschedulable`.
    pub node_memory_bytes: u64,
    /// How often watches that allow them get a bookmark.
    pub bookmark_interval: Duration,
    /// How long the kubelet waits before it takes up a new Pod (so that a client's
    /// list sees it Pending and the rest comes through its watch).
    pub start_delay: Duration,
    /// Serves kubernetes-sigs/agent-sandbox's API (`agents.x-k8s.io/v1beta1` Sandbox,
    /// `extensions.agents.x-k8s.io/v1beta1` SandboxTemplate, SandboxWarmPool,
    /// SandboxClaim) with a controller that realizes them.
    pub agent_sandbox: bool,
    /// A Kiln image store: the kubelet runs each Pod's agent chrooted into an overlay of
    /// its image's layers (`rootfs.rs`), and an image not in it fails its pull. `None`:
    /// the agent runs in an empty directory and every image "pulls".
    pub images_dir: Option<PathBuf>,
}

impl ClusterOptions {
    /// A node of 8 GiB, bookmarks every 200 ms, every image but the agent's present.
    pub fn new(agent_binary: impl Into<PathBuf>, agent_image: impl Into<String>) -> Self {
        ClusterOptions {
            agent_binary: agent_binary.into(),
            agent_image: agent_image.into(),
            missing_images: Vec::new(),
            node_memory_bytes: 8 << 30,
            bookmark_interval: Duration::from_millis(200),
            start_delay: Duration::ZERO,
            agent_sandbox: false,
            images_dir: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    version: u64,
    kind: &'static str,
    /// `pods`, or a custom resource's plural.
    resource: &'static str,
    object: Value,
}

/// An object's metadata, from its JSON.
fn meta_of(object: &Value) -> ObjectMeta {
    serde_json::from_value(object["metadata"].clone()).unwrap_or_default()
}

#[derive(Default)]
struct Inner {
    version: u64,
    pods: BTreeMap<(String, String), Pod>,
    policies: BTreeMap<(String, String), NetworkPolicy>,
    secrets: BTreeMap<(String, String), Secret>,
    /// agent-sandbox's objects, by (plural, namespace, name).
    custom: BTreeMap<(&'static str, String, String), Value>,
    history: VecDeque<Event>,
    /// Watches from versions below this get 410 Gone.
    compacted_below: u64,
    /// An injected status for the next calls: (status, how many more).
    fault: Option<(u16, usize)>,
    /// Watches still to be broken after their first event.
    broken_watches: usize,
    /// Every request, `METHOD path?query`, for assertions.
    log: Vec<String>,
    /// Kills of running Pods' agents, by Pod: the reason to report (`None`: deleted).
    kills: BTreeMap<(String, String), tokio::sync::oneshot::Sender<Option<String>>>,
}

struct Shared {
    options: ClusterOptions,
    /// Pods' working directories live under it.
    root: PathBuf,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    /// Bumped to end every open watch (a restarted API server).
    cut: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn dir_for(&self, ns: &str, name: &str) -> PathBuf {
        self.root.join(format!("{ns}-{name}"))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change of a Pod: a new version, an event for watchers.
    fn record(
        inner: &mut Inner,
        events: &broadcast::Sender<Event>,
        kind: &'static str,
        pod: &mut Pod,
    ) {
        inner.version += 1;
        pod.metadata.resource_version = Some(inner.version.to_string());
        let object = serde_json::to_value(&*pod).unwrap_or_default();
        Self::push(inner, events, kind, "pods", object);
    }

    /// Records a change of a custom object (its resourceVersion already set).
    fn push(
        inner: &mut Inner,
        events: &broadcast::Sender<Event>,
        kind: &'static str,
        resource: &'static str,
        object: Value,
    ) {
        let event = Event {
            version: inner.version,
            kind,
            resource,
            object,
        };
        inner.history.push_back(event.clone());
        let _ = events.send(event);
    }

    /// Changes a Pod's status (the kubelet's updates); false when it is gone.
    fn update_status(&self, ns: &str, name: &str, change: impl FnOnce(&mut PodStatus)) -> bool {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let key = (ns.to_string(), name.to_string());
        let Some(pod) = inner.pods.get_mut(&key) else {
            return false;
        };
        change(pod.status.get_or_insert_with(Default::default));
        let mut copy = pod.clone();
        Self::record(inner, &self.events, "MODIFIED", &mut copy);
        inner.pods.insert(key, copy);
        // agent-sandbox's controller mirrors it into its Sandbox, claim and pool.
        controller::pod_changed(inner, self, ns, name);
        true
    }
}

/// A running test API server; stops when dropped.
pub struct TestCluster {
    addr: SocketAddr,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.server.abort();
        for (_, kill) in std::mem::take(&mut self.shared.lock().kills) {
            let _ = kill.send(None);
        }
    }
}

impl TestCluster {
    /// Starts the server on a free loopback port.
    pub async fn start(options: ClusterOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dir = tempfile::tempdir()?;
        let shared = Arc::new(Shared {
            options,
            root: dir.path().join("pods"),
            inner: Mutex::default(),
            events: broadcast::channel(1024).0,
            cut: tokio::sync::watch::channel(0).0,
        });
        let app = router(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let cluster = TestCluster {
            addr,
            shared,
            dir,
            server,
        };
        std::fs::write(cluster.kubeconfig(), cluster.kubeconfig_text())?;
        Ok(cluster)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig file whose current context is this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubeconfig_text(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user:\n    token: test-token\ncontexts:\n- name: test\n  \
             context:\n    cluster: test\n    user: test\n    namespace: default\n\
             current-context: test\n",
            self.url()
        )
    }

    /// The next `count` API calls (watches included) answer `status`.
    pub fn fail_next(&self, status: u16, count: usize) {
        self.shared.lock().fault = Some((status, count));
    }

    /// The next `count` watches end right after their first event.
    pub fn break_next_watches(&self, count: usize) {
        self.shared.lock().broken_watches = count;
    }

    /// Ends every open watch now (as an API server restart does).
    pub fn end_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Forgets the history: a watch from any version seen so far gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.shared.lock();
        inner.compacted_below = inner.version + 1;
        inner.history.clear();
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// The Pods there are now.
    pub fn pods(&self) -> Vec<Pod> {
        self.shared.lock().pods.values().cloned().collect()
    }

    /// The Secrets there are now.
    pub fn secrets(&self) -> Vec<Secret> {
        self.shared.lock().secrets.values().cloned().collect()
    }

    /// The NetworkPolicies there are now.
    pub fn network_policies(&self) -> Vec<NetworkPolicy> {
        self.shared.lock().policies.values().cloned().collect()
    }

    /// agent-sandbox objects of kind `plural` (`sandboxclaims`, `sandboxes`,
    /// `sandboxwarmpools`, `sandboxtemplates`) there are now.
    pub fn custom(&self, plural: &str) -> Vec<Value> {
        self.shared
            .lock()
            .custom
            .iter()
            .filter(|((p, _, _), _)| *p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Deletes an agent-sandbox object as someone else would (its controller reacts).
    pub fn delete_custom(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let mut guard = self.shared.lock();
        custom::remove(&mut guard, &self.shared, plural, namespace, name).is_some()
    }

    /// Adds a NetworkPolicy directly (e.g. the leftover of a crashed create).
    pub fn insert_network_policy(&self, namespace: &str, mut policy: NetworkPolicy) {
        let name = policy.metadata.name.clone().unwrap_or_default();
        policy.metadata.namespace = Some(namespace.to_string());
        self.shared
            .lock()
            .policies
            .insert((namespace.to_string(), name), policy);
    }

    /// Kills Pod `name`'s running container, its status then saying `reason` (e.g.
    /// `OOMKilled`), as a kubelet would for a container out of memory.
    pub fn kill_container(&self, namespace: &str, name: &str, reason: &str) -> bool {
        let kill = self
            .shared
            .lock()
            .kills
            .remove(&(namespace.to_string(), name.to_string()));
        kill.is_some_and(|k| k.send(Some(reason.to_string())).is_ok())
    }

    /// The working directory of Pod `name`'s process while it runs (the test
    /// kubelet's stand-in for the container's root).
    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.shared.dir_for(namespace, name)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    let pods = "/api/v1/namespaces/{ns}/pods";
    let policies = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies";
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route(pods, get(list_pods).post(create_pod))
        .route(
            &format!("{pods}/{{name}}"),
            get(get_pod).delete(delete_pod).patch(patch_pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/secrets",
            get(list_secrets).post(create_secret),
        )
        .route(
            "/api/v1/namespaces/{ns}/secrets/{name}",
            get(get_secret).delete(delete_secret),
        )
        .route(policies, get(list_policies).post(create_policy))
        .route(
            &format!("{policies}/{{name}}"),
            get(get_policy).delete(delete_policy),
        )
        .route("/apis/{group}/{version}", get(custom::resources))
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            get(custom::list).post(custom::create),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            get(custom::get).delete(custom::delete).patch(custom::patch),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status",
            get(custom::get).put(custom::put_status),
        )
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), faults))
        .with_state(shared)
}

/// Logs each request and answers an injected fault instead, while one is armed.
async fn faults(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let fault = {
        let mut inner = shared.lock();
        let line = format!(
            "{} {}",
            request.method(),
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("")
        );
        inner.log.push(line);
        match &mut inner.fault {
            Some((status, left)) if *left > 0 => {
                *left -= 1;
                Some(*status)
            }
            _ => None,
        }
    };
    match fault {
        Some(code) => status(code, "Injected", "an injected fault"),
        None => next.run(request).await,
    }
}

/// A `Status` answer, as the API server gives for errors.
fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = status_body(code, reason, message);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn version() -> Json<Value> {
    Json(
        json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-kiln-test",
        "gitCommit": "0", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"}),
    )
}

async fn api_versions() -> Json<Value> {
    Json(json!({"kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
}

async fn api_groups(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Value> {
    let group = |name: &str, version: &str| {
        let v = json!({"groupVersion": format!("{name}/{version}"), "version": version});
        json!({"name": name, "versions": [v.clone()], "preferredVersion": v})
    };
    let mut groups = vec![group("networking.k8s.io", "v1")];
    if shared.options.agent_sandbox {
        groups.push(group(custom::SANDBOX_GROUP, custom::VERSION));
        groups.push(group(custom::EXTENSIONS_GROUP, custom::VERSION));
    }
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

/// `labelSelector` (`k=v`, comma-separated) and `fieldSelector` (`metadata.name=x`).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Selectors {
    label_selector: Option<String>,
    field_selector: Option<String>,
    watch: Option<bool>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<bool>,
    timeout_seconds: Option<u64>,
}

impl Selectors {
    fn matches(&self, meta: &ObjectMeta) -> bool {
        let labels = meta.labels.clone().unwrap_or_default();
        let pairs = |s: &Option<String>| -> Vec<(String, String)> {
            s.iter()
                .flat_map(|s| s.split(','))
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.trim_start_matches('=').to_string())
                })
                .collect()
        };
        let labels_ok = pairs(&self.label_selector)
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v));
        let fields_ok = pairs(&self.field_selector)
            .iter()
            .all(|(k, v)| match k.as_str() {
                "metadata.name" => meta.name.as_deref() == Some(v),
                "metadata.namespace" => meta.namespace.as_deref() == Some(v),
                _ => false,
            });
        labels_ok && fields_ok
    }
}
