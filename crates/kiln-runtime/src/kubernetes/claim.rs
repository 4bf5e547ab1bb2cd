//! agent-sandbox mode's objects (kubernetes-sigs/agent-sandbox, API `v1beta1` as of its
//! main branch after v0.5.6): a SandboxTemplate per image and resource class holding the
//! same Pod as pods mode (agent injected), a SandboxWarmPool per template, a
//! SandboxClaim per sandbox. Pure functions of the spec and settings, tested field by
//! field; the status of a claim read into ready / waiting / a typed [`ClaimFailure`].
//!
//! They are `DynamicObject`s, not `kube::CustomResource` types: the derive needs kube's
//! `derive` feature and schemars for a schema Kiln never installs (agent-sandbox owns
//! the CRDs), and Kiln writes a handful of fields and reads three, so fields a newer
//! agent-sandbox adds pass through untouched instead of failing a typed parse.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Value};

use super::pod::{self, labels, SECRET_ENV};
use super::KubeSettings;
use crate::spec::{SandboxId, SandboxSpec};

/// Sandbox's group (Kiln never touches Sandboxes: claims make and end them).
pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
/// SandboxTemplate's, SandboxWarmPool's and SandboxClaim's group.
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
/// The version Kiln speaks, of both groups.
pub const VERSION: &str = "v1beta1";
/// Pods of a template carry it (its NetworkPolicy selects nothing else of Kiln's).
pub const TEMPLATE_LABEL: &str = "kiln.dev/template";

fn resource(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, VERSION, kind), plural)
}

/// `extensions.agents.x-k8s.io/v1beta1` SandboxTemplate.
pub fn templates() -> ApiResource {
    resource(EXTENSIONS_GROUP, "SandboxTemplate", "sandboxtemplates")
}

/// `extensions.agents.x-k8s.io/v1beta1` SandboxWarmPool.
pub fn warm_pools() -> ApiResource {
    resource(EXTENSIONS_GROUP, "SandboxWarmPool", "sandboxwarmpools")
}

/// `extensions.agents.x-k8s.io/v1beta1` SandboxClaim.
pub fn claims() -> ApiResource {
    resource(EXTENSIONS_GROUP, "SandboxClaim", "sandboxclaims")
}

fn fnv32(parts: &[&str]) -> u32 {
    let hash = parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, part| {
        part.bytes().chain(std::iter::once(0)).fold(h, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    });
    hash as u32
}

/// The template (and warm pool, and agent Secret) name of a spec: what makes its Pods
/// differ (image, resources, working directory, host name, the cluster settings) hashed
/// into a DNS label, so equal sandboxes share a template and its pool.
pub fn template_name(settings: &KubeSettings, spec: &SandboxSpec, image: &str) -> String {
    let limits = &spec.limits;
    let numbers = format!(
        "{:?}/{:?}/{:?}",
        limits.memory_bytes, limits.cpu_millicores, limits.disk_bytes
    );
    let hash = fnv32(&[
        image,
        &numbers,
        spec.workdir.as_deref().unwrap_or(""),
        &spec.hostname,
        settings.runtime_class.as_deref().unwrap_or(""),
        &settings.agent_image,
        &settings.agent_copy_command.join(" "),
        &settings.agent_port.to_string(),
        if settings.user_namespace {
            "userns"
        } else {
            ""
        },
    ]);
    let readable: String = image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .chars()
        .take(30)
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect();
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        format!("kiln-tpl-{hash:08x}")
    } else {
        format!("kiln-tpl-{readable}-{hash:08x}")
    }
}

fn meta(settings: &KubeSettings, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels(settings, name)),
        ..Default::default()
    }
}

fn object(resource: &ApiResource, metadata: ObjectMeta, data: Value) -> DynamicObject {
    let mut object = DynamicObject::new("", resource).data(data);
    object.metadata = metadata;
    object
}

/// The SandboxTemplate of `spec`: the pods-mode Pod without the session's env (a
/// claim's), its agent secret from the template's Secret, and a NetworkPolicy that
/// denies egress and opens only the agent's port (agent-sandbox's own default would
/// allow the public internet).
pub fn sandbox_template(settings: &KubeSettings, spec: &SandboxSpec, image: &str) -> DynamicObject {
    let name = template_name(settings, spec, image);
    let mut shared = spec.clone();
    shared.env.clear();
    let pod = pod::pod_reading_secret(settings, &shared, image, &name);
    let pod_spec = pod.spec.unwrap_or_default();
    let template = json!({
        "podTemplate": {
            "metadata": {"labels": {TEMPLATE_LABEL: name}},
            "spec": pod_spec,
        },
        "networkPolicyManagement": "Managed",
        "networkPolicy": {
            "ingress": [{"ports": [{"port": settings.agent_port, "protocol": "TCP"}]}],
            "egress": [],
        },
        // A claim may add variables (the session's) but not override the template's:
        // the agent's secret and address stay the template's.
        "envVarsInjectionPolicy": "Allowed",
    });
    object(
        &templates(),
        meta(settings, &name),
        json!({ "spec": template }),
    )
}

/// The template's SandboxWarmPool: `replicas` sandboxes kept ready (0: claims start
/// cold; agent-sandbox's claims always name a pool).
pub fn warm_pool(settings: &KubeSettings, template: &str, replicas: u32) -> DynamicObject {
    object(
        &warm_pools(),
        meta(settings, template),
        json!({"spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}}}),
    )
}

/// The SandboxClaim of sandbox `spec.id`: from the template's pool, the session's env,
/// ending at `spec.expires_at` (the session's TTL), else at `now + ttl` (the configured
/// backstop) (`shutdownTime`, policy `Delete`).
pub fn sandbox_claim(
    settings: &KubeSettings,
    spec: &SandboxSpec,
    template: &str,
    now: SystemTime,
    ttl: Duration,
) -> DynamicObject {
    let name = pod::pod_name(&spec.id);
    let mut metadata = meta(settings, &name);
    metadata.annotations = Some(BTreeMap::from([(
        pod::ID_ANNOTATION.to_string(),
        spec.id.to_string(),
    )]));
    let env: Vec<Value> = spec
        .env
        .iter()
        .filter(|(k, _)| k.as_str() != SECRET_ENV && k.as_str() != "KILN_POD_IP")
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let shutdown = spec.expires_at.unwrap_or(now + ttl);
    let mut claim = json!({
        "warmPoolRef": {"name": template},
        "lifecycle": {"shutdownTime": rfc3339(shutdown), "shutdownPolicy": "Delete"},
    });
    // A claim with env starts cold (a warm Pod's env is fixed): only when there is some.
    if !env.is_empty() {
        claim["env"] = Value::Array(env);
    }
    object(&claims(), metadata, json!({ "spec": claim }))
}

/// The merge patch that moves a claim's `shutdownTime` to `at`.
pub fn shutdown_patch(at: SystemTime) -> Value {
    json!({"spec": {"lifecycle": {"shutdownTime": rfc3339(at)}}})
}

/// The claim name of a sandbox (its Pod's name in pods mode).
pub fn claim_name(id: &SandboxId) -> String {
    pod::pod_name(id)
}

fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Why a SandboxClaim cannot give a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the SandboxClaim failed ({reason}): {message}")]
pub struct ClaimFailure {
    /// Its Ready condition's reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// Ready=False reasons of a claim (agent-sandbox's claim and sandbox controllers) that
/// no waiting mends. Others (`DependenciesNotReady`, `SandboxNotReady`,
/// `AdoptionConflict`, `SandboxCreatePending`) are on the way to ready.
const TERMINAL_REASONS: [&str; 10] = [
    "WarmPoolNotFound",
    "TemplateNotFound",
    "ReconcilerError",
    "VolumeClaimTemplatesError",
    "PodFailed",
    "PodSucceeded",
    "SandboxExpired",
    "ClaimExpired",
    "SandboxMissing",
    "MultiplePods",
];

/// What a claim's status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// No sandbox yet.
    Pending,
    /// Its sandbox (and so its Pod) is named; whether ready is the Pod's to say.
    Bound {
        /// The Sandbox's name, also its Pod's.
        sandbox: String,
    },
    /// It cannot become ready.
    Failed(ClaimFailure),
}

/// Reads `status.conditions[type=Ready]` and `status.sandbox.name`.
pub fn claim_state(claim: &DynamicObject) -> ClaimState {
    let status = &claim.data["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    if let Some(ready) = ready {
        let reason = ready["reason"].as_str().unwrap_or_default();
        if ready["status"] == "False" && TERMINAL_REASONS.contains(&reason) {
            return ClaimState::Failed(ClaimFailure {
                reason: reason.to_string(),
                message: ready["message"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    match status["sandbox"]["name"].as_str() {
        Some(name) if !name.is_empty() => ClaimState::Bound {
            sandbox: name.to_string(),
        },
        _ => ClaimState::Pending,
    }
}

/// The pool (= template, = agent Secret) a claim draws from.
pub fn claim_template(claim: &DynamicObject) -> Option<String> {
    claim.data["spec"]["warmPoolRef"]["name"]
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::Limits;

    fn spec(id: &str, memory: u64) -> SandboxSpec {
        let mut spec = SandboxSpec::image(SandboxId::new(id).unwrap(), "swebench/sweb.eval:1");
        spec.limits = Limits {
            memory_bytes: Some(memory),
            disk_bytes: None,
            pids: None,
            cpu_millicores: Some(500),
        };
        spec
    }

    #[test]
    fn a_template_per_image_and_resource_class_with_the_agent_injected() {
        let settings = KubeSettings::new("node-a");
        let (a, b, big) = (spec("a", 1 << 30), spec("b", 1 << 30), spec("c", 2 << 30));
        let name = template_name(&settings, &a, "swebench/sweb.eval:1");
        assert_eq!(name, template_name(&settings, &b, "swebench/sweb.eval:1"));
        assert_ne!(name, template_name(&settings, &big, "swebench/sweb.eval:1"));
        assert_ne!(name, template_name(&settings, &a, "python:3.12"));
        assert!(
            name.starts_with("kiln-tpl-sweb-eval-1-") && name.len() <= 63,
            "{name}"
        );

        let mut with_env = a.clone();
        with_env.env.insert("TOKEN".into(), "t".into());
        let t = serde_json::to_value(sandbox_template(
            &settings,
            &with_env,
            "swebench/sweb.eval:1",
        ))
        .unwrap();
        assert_eq!(t["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
        assert_eq!(t["kind"], "SandboxTemplate");
        assert_eq!(t["metadata"]["name"], name);
        let spec = &t["spec"];
        assert_eq!(spec["envVarsInjectionPolicy"], "Allowed");
        assert_eq!(spec["networkPolicy"]["egress"], json!([]));
        assert_eq!(
            spec["networkPolicy"]["ingress"][0]["ports"][0]["port"],
            7171
        );
        let pod = &spec["podTemplate"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(pod["initContainers"][0]["command"][2], "/.kiln/agent");
        let main = &pod["containers"][0];
        assert_eq!(main["command"], json!(["/.kiln/agent"]));
        assert_eq!(
            main["resources"]["limits"]["memory"],
            (1u64 << 30).to_string()
        );
        let env = main["env"].as_array().unwrap();
        assert!(
            !env.iter().any(|e| e["name"] == "TOKEN"),
            "the session's env is the claim's"
        );
        let secret = env.iter().find(|e| e["name"] == SECRET_ENV).unwrap();
        assert_eq!(secret["valueFrom"]["secretKeyRef"]["name"], name);
        assert_eq!(
            spec["podTemplate"]["metadata"]["labels"][TEMPLATE_LABEL],
            name
        );

        let pool = serde_json::to_value(warm_pool(&settings, &name, 3)).unwrap();
        assert_eq!(pool["kind"], "SandboxWarmPool");
        assert_eq!(
            pool["spec"],
            json!({"replicas": 3, "sandboxTemplateRef": {"name": name}})
        );
    }

    #[test]
    fn a_claim_names_its_pool_env_and_shutdown_time() {
        let settings = KubeSettings::new("node-a");
        let mut s = spec("Sess_1", 1 << 30);
        s.env.insert("LANG".into(), "C".into());
        s.env.insert(SECRET_ENV.into(), "smuggled".into());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let claim = sandbox_claim(&settings, &s, "kiln-tpl-x", now, Duration::from_secs(3600));
        let v = serde_json::to_value(&claim).unwrap();
        assert_eq!(v["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
        assert_eq!(v["kind"], "SandboxClaim");
        assert_eq!(v["metadata"]["name"], claim_name(&s.id));
        assert_eq!(v["metadata"]["annotations"][pod::ID_ANNOTATION], "Sess_1");
        assert_eq!(v["metadata"]["labels"][pod::NODE_LABEL], "node-a");
        assert_eq!(v["spec"]["warmPoolRef"]["name"], "kiln-tpl-x");
        assert_eq!(
            v["spec"]["lifecycle"],
            json!({"shutdownTime": "2027-01-15T09:00:00Z", "shutdownPolicy": "Delete"})
        );
        assert_eq!(v["spec"]["env"], json!([{"name": "LANG", "value": "C"}]));
        assert_eq!(claim_template(&claim).as_deref(), Some("kiln-tpl-x"));
        let bare = sandbox_claim(&settings, &spec("b", 1), "t", now, Duration::ZERO);
        assert!(
            bare.data["spec"].get("env").is_none(),
            "no env: a warm sandbox fits"
        );
    }

    #[test]
    fn a_claim_ends_at_its_sessions_expiry_when_the_spec_has_one() {
        let settings = KubeSettings::new("node-a");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut s = spec("Sess_1", 1 << 30);
        // The session's TTL (30 minutes), not the 24 h backstop.
        s.expires_at = Some(now + Duration::from_secs(1800));
        let claim = sandbox_claim(&settings, &s, "t", now, Duration::from_secs(86_400));
        assert_eq!(
            claim.data["spec"]["lifecycle"]["shutdownTime"],
            "2027-01-15T08:30:00Z"
        );
    }

    #[test]
    fn claim_statuses_are_read() {
        let mut claim = sandbox_claim(
            &KubeSettings::new("n"),
            &spec("s", 1),
            "t",
            SystemTime::now(),
            Duration::ZERO,
        );
        assert_eq!(claim_state(&claim), ClaimState::Pending);
        claim.data["status"] = json!({"sandbox": {"name": "t-abc"}, "conditions": [
            {"type": "Ready", "status": "False", "reason": "DependenciesNotReady", "message": "Pod exists with phase: Pending"}]});
        assert_eq!(
            claim_state(&claim),
            ClaimState::Bound {
                sandbox: "t-abc".into()
            }
        );
        claim.data["status"]["conditions"][0]["reason"] = json!("WarmPoolNotFound");
        claim.data["status"]["conditions"][0]["message"] = json!("SandboxWarmPool \"t\" not found");
        match claim_state(&claim) {
            ClaimState::Failed(f) => {
                assert_eq!(f.reason, "WarmPoolNotFound");
                assert!(f.to_string().contains("not found"), "{f}");
            }
            other => panic!("{other:?}"),
        }
    }
}
