//! The test stand-in for agent-sandbox's controllers, after their v1beta1 behaviour:
//! a SandboxWarmPool keeps `replicas` Sandboxes of its template; a SandboxClaim adopts
//! a ready one of its pool (and the pool refills), or — none ready, or the claim sets
//! env — gets a new Sandbox from the template; a Sandbox gets a Pod of its name whose
//! status (through the test kubelet) is mirrored into the Sandbox's Ready /
//! PodScheduled conditions and podIPs, then into its claim's or pool's status. A
//! claim's `shutdownTime` deletes it (policy Delete), and deletes cascade: claim →
//! Sandbox → Pod, pool → its unclaimed Sandboxes. Error reasons are the real ones
//! (`WarmPoolNotFound`, `TemplateNotFound`, `PodFailed`, `ClaimExpired`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::custom::{self, SANDBOX_GROUP, VERSION};
use super::{meta_of, objects, Inner, Shared};

/// agent-sandbox's label of a pool's unclaimed Sandboxes.
const POOL_LABEL: &str = "agents.x-k8s.io/warm-pool-sandbox";
/// agent-sandbox's label: `warm` (from a pool) or `cold`.
const LAUNCH_LABEL: &str = "agents.x-k8s.io/launch-type";

/// The (kind, name) of an object's controlling owner.
fn owner(object: &Value) -> Option<(String, String)> {
    let owner = object["metadata"]["ownerReferences"].get(0)?;
    Some((
        owner["kind"].as_str()?.to_string(),
        owner["name"].as_str()?.to_string(),
    ))
}

fn owner_ref(of: &Value) -> Value {
    json!([{"apiVersion": of["apiVersion"], "kind": of["kind"],
        "name": of["metadata"]["name"], "uid": of["metadata"]["uid"], "controller": true}])
}

fn ready_condition(object: &Value) -> Option<&Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

fn is_ready(object: &Value) -> bool {
    ready_condition(object).is_some_and(|c| c["status"] == "True")
}

fn sandboxes_owned_by<'a>(
    inner: &'a Inner,
    ns: &'a str,
    kind: &'a str,
    name: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
    inner
        .custom
        .iter()
        .filter(move |((p, n, _), v)| {
            *p == "sandboxes" && n == ns && owner(v).is_some_and(|(k, o)| k == kind && o == name)
        })
        .map(|((_, _, name), v)| (name, v))
}

/// After a create of an agent-sandbox object.
pub(super) fn created(shared: &Arc<Shared>, inner: &mut Inner, plural: &str, ns: &str, name: &str) {
    match plural {
        "sandboxwarmpools" => fill_pool(shared, inner, ns, name),
        "sandboxclaims" => bind(shared, inner, ns, name),
        "sandboxes" => start_sandbox(shared, inner, ns, name),
        _ => {}
    }
}

/// After a patch: a claim's expiry follows its `shutdownTime`.
pub(super) fn patched(shared: &Arc<Shared>, plural: &str, ns: &str, name: &str, object: &Value) {
    if plural == "sandboxclaims" {
        expire_at_shutdown_time(shared, ns, name, object);
    }
}

/// After a delete: what the object owned goes too.
pub(super) fn deleted(inner: &mut Inner, shared: &Shared, plural: &str, ns: &str, object: &Value) {
    let name = meta_of(object).name.unwrap_or_default();
    let kind = match plural {
        "sandboxclaims" => "SandboxClaim",
        "sandboxwarmpools" => "SandboxWarmPool",
        "sandboxes" => {
            objects::remove_pod(shared, inner, ns, &name);
            return;
        }
        _ => return,
    };
    let owned: Vec<String> = sandboxes_owned_by(inner, ns, kind, &name)
        .map(|(n, _)| n.clone())
        .collect();
    for sandbox in owned {
        custom::remove(inner, shared, "sandboxes", ns, &sandbox);
    }
}

/// Creates Sandbox `name` from `template` (its Pod too), owned by `owner`.
fn new_sandbox(
    shared: &Arc<Shared>,
    inner: &mut Inner,
    ns: &str,
    name: &str,
    template: &Value,
    (owner, labels, env): (&Value, Value, &[Value]),
) {
    let mut pod_template = template["spec"]["podTemplate"].clone();
    if !env.is_empty() {
        let container = &mut pod_template["spec"]["containers"][0];
        let mut all = container["env"].as_array().cloned().unwrap_or_default();
        all.extend(
            env.iter()
                .map(|e| json!({"name": e["name"], "value": e["value"]})),
        );
        container["env"] = Value::Array(all);
    }
    let sandbox = json!({"apiVersion": format!("{SANDBOX_GROUP}/{VERSION}"), "kind": "Sandbox",
        "metadata": {"name": name, "labels": labels, "ownerReferences": owner_ref(owner)},
        "spec": {"podTemplate": pod_template}});
    custom::insert(inner, shared, "sandboxes", ns, sandbox);
    start_sandbox(shared, inner, ns, name);
}

/// The Sandbox's Pod: its podTemplate, named like it.
fn start_sandbox(shared: &Arc<Shared>, inner: &mut Inner, ns: &str, name: &str) {
    let Some(sandbox) = inner
        .custom
        .get(&("sandboxes", ns.to_string(), name.to_string()))
        .cloned()
    else {
        return;
    };
    let template = &sandbox["spec"]["podTemplate"];
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"],
            "ownerReferences": owner_ref(&sandbox)},
        "spec": template["spec"]});
    match serde_json::from_value::<Pod>(pod) {
        Ok(pod) => {
            objects::insert_pod(shared, inner, ns, pod);
            mirror_sandbox(inner, shared, ns, name);
        }
        Err(err) => set_ready(
            inner,
            shared,
            "sandboxes",
            ns,
            name,
            (
                "ReconcilerError",
                &format!("Error seen: invalid podTemplate: {err}"),
            ),
        ),
    }
}

/// Sets a Ready=False condition with `reason` and `message`.
fn set_ready(
    inner: &mut Inner,
    shared: &Shared,
    plural: &'static str,
    ns: &str,
    name: &str,
    (reason, message): (&str, &str),
) {
    let condition = json!({"type": "Ready", "status": "False", "reason": reason,
        "message": message, "lastTransitionTime": now()});
    custom::update(inner, shared, plural, ns, name, |v| {
        v["status"]["conditions"] = json!([condition]);
    });
}

fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn fill_pool(shared: &Arc<Shared>, inner: &mut Inner, ns: &str, pool: &str) {
    let key = ("sandboxwarmpools", ns.to_string(), pool.to_string());
    let Some(pool_object) = inner.custom.get(&key).cloned() else {
        return;
    };
    let replicas = pool_object["spec"]["replicas"].as_u64().unwrap_or(1);
    let template_name = pool_object["spec"]["sandboxTemplateRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template_key = ("sandboxtemplates", ns.to_string(), template_name);
    let Some(template) = inner.custom.get(&template_key).cloned() else {
        return;
    };
    let have = sandboxes_owned_by(inner, ns, "SandboxWarmPool", pool).count() as u64;
    for _ in have..replicas {
        let name = format!("{pool}-{:05x}", (inner.version + 1) % 0x10_0000);
        let labels = json!({POOL_LABEL: pool, LAUNCH_LABEL: "warm"});
        new_sandbox(
            shared,
            inner,
            ns,
            &name,
            &template,
            (&pool_object, labels, &[]),
        );
    }
    pool_status(inner, shared, ns, pool);
}

fn pool_status(inner: &mut Inner, shared: &Shared, ns: &str, pool: &str) {
    let (mut replicas, mut ready) = (0, 0);
    for (_, sandbox) in sandboxes_owned_by(inner, ns, "SandboxWarmPool", pool) {
        replicas += 1;
        ready += u32::from(is_ready(sandbox));
    }
    custom::update(inner, shared, "sandboxwarmpools", ns, pool, |v| {
        v["status"] = json!({"replicas": replicas, "readyReplicas": ready,
            "selector": format!("{POOL_LABEL}={pool}")});
    });
}

/// A new claim: a ready Sandbox of its pool, else a new one from the template.
fn bind(shared: &Arc<Shared>, inner: &mut Inner, ns: &str, claim: &str) {
    let get = |inner: &Inner, plural: &'static str, name: &str| {
        inner
            .custom
            .get(&(plural, ns.to_string(), name.to_string()))
            .cloned()
    };
    let Some(claim_object) = get(inner, "sandboxclaims", claim) else {
        return;
    };
    let spec = &claim_object["spec"];
    let pool_name = spec["warmPoolRef"]["name"].as_str().unwrap_or_default();
    let fail = |inner: &mut Inner, reason: &str, message: String| {
        set_ready(
            inner,
            shared,
            "sandboxclaims",
            ns,
            claim,
            (reason, &message),
        );
    };
    let Some(pool) = get(inner, "sandboxwarmpools", pool_name) else {
        let message = format!("SandboxWarmPool {pool_name:?} not found");
        return fail(inner, "WarmPoolNotFound", message);
    };
    let template_name = pool["spec"]["sandboxTemplateRef"]["name"]
        .as_str()
        .unwrap_or_default();
    let Some(template) = get(inner, "sandboxtemplates", template_name) else {
        let message = format!("SandboxTemplate {template_name:?} not found");
        return fail(inner, "TemplateNotFound", message);
    };
    let env = spec["env"].as_array().cloned().unwrap_or_default();
    if !env.is_empty() && template["spec"]["envVarsInjectionPolicy"] != "Allowed" {
        let message = "Error seen: the template does not allow env injection".to_string();
        return fail(inner, "ReconcilerError", message);
    }
    // A claim with env cannot use a warm Pod (its env is fixed): cold.
    let warm = env
        .is_empty()
        .then(|| {
            sandboxes_owned_by(inner, ns, "SandboxWarmPool", pool_name)
                .find(|(_, s)| is_ready(s))
                .map(|(n, _)| n.clone())
        })
        .flatten();
    let sandbox = match warm {
        Some(warm) => {
            custom::update(inner, shared, "sandboxes", ns, &warm, |s| {
                s["metadata"]["ownerReferences"] = owner_ref(&claim_object);
                s["metadata"]["labels"] = json!({LAUNCH_LABEL: "warm"});
            });
            fill_pool(shared, inner, ns, pool_name);
            warm
        }
        None => {
            let labels = json!({LAUNCH_LABEL: "cold"});
            new_sandbox(
                shared,
                inner,
                ns,
                claim,
                &template,
                (&claim_object, labels, &env),
            );
            claim.to_string()
        }
    };
    mirror_claim(inner, shared, ns, claim, &sandbox);
    expire_at_shutdown_time(shared, ns, claim, &claim_object);
}

/// Deletes the claim (policy `Delete`) or its Sandbox (`Retain`, the default) at its
/// `spec.lifecycle.shutdownTime`.
fn expire_at_shutdown_time(shared: &Arc<Shared>, ns: &str, claim: &str, object: &Value) {
    let lifecycle = &object["spec"]["lifecycle"];
    let Some(at) = lifecycle["shutdownTime"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return;
    };
    let delete = lifecycle["shutdownPolicy"] == "Delete";
    let uid = object["metadata"]["uid"].clone();
    let armed = lifecycle["shutdownTime"].clone();
    let at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(at.as_second()).unwrap_or(0));
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let (shared, ns, claim) = (Arc::clone(shared), ns.to_string(), claim.to_string());
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let mut guard = shared.lock();
        let inner = &mut *guard;
        let key = ("sandboxclaims", ns.clone(), claim.clone());
        // Gone, another claim of that name, or its shutdownTime moved (a later timer's).
        let current = inner.custom.get(&key);
        if current.map(|c| &c["metadata"]["uid"]) != Some(&uid)
            || current.map(|c| &c["spec"]["lifecycle"]["shutdownTime"]) != Some(&armed)
        {
            return;
        }
        if delete {
            custom::remove(inner, &shared, "sandboxclaims", &ns, &claim);
            return;
        }
        let owned: Vec<String> = sandboxes_owned_by(inner, &ns, "SandboxClaim", &claim)
            .map(|(n, _)| n.clone())
            .collect();
        for sandbox in owned {
            custom::remove(inner, &shared, "sandboxes", &ns, &sandbox);
        }
        let message = "Claim expired. Sandbox cleanup initiated.";
        set_ready(
            inner,
            &shared,
            "sandboxclaims",
            &ns,
            &claim,
            ("ClaimExpired", message),
        );
    });
}

/// After a Pod's change: its Sandbox (if it has one) mirrors it.
pub(super) fn pod_changed(inner: &mut Inner, shared: &Shared, ns: &str, pod: &str) {
    if inner
        .custom
        .contains_key(&("sandboxes", ns.to_string(), pod.to_string()))
    {
        mirror_sandbox(inner, shared, ns, pod);
    }
}

/// The Sandbox's status from its Pod's, as agent-sandbox's sandbox controller writes it.
fn mirror_sandbox(inner: &mut Inner, shared: &Shared, ns: &str, name: &str) {
    let pod = inner.pods.get(&(ns.to_string(), name.to_string())).cloned();
    let status = pod
        .as_ref()
        .and_then(|p| p.status.clone())
        .unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    let pod_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ips: Vec<String> = status.pod_ip.iter().cloned().collect();
    let (ready, reason, message) = match (&pod, phase.as_str()) {
        (None, _) => (
            false,
            "DependenciesNotReady",
            "Pod does not exist".to_string(),
        ),
        (_, "Failed") => (false, "PodFailed", "Pod failed".to_string()),
        (_, "Succeeded") => (
            false,
            "PodSucceeded",
            "Pod completed successfully".to_string(),
        ),
        (_, "Running") if pod_ready && !ips.is_empty() => {
            (true, "DependenciesReady", "Pod is Ready".to_string())
        }
        (_, "Running") => (
            false,
            "DependenciesNotReady",
            "Pod is Running but not Ready".into(),
        ),
        (_, phase) => (
            false,
            "DependenciesNotReady",
            format!("Pod exists with phase: {phase}"),
        ),
    };
    let mut conditions = vec![json!({"type": "Ready",
        "status": if ready { "True" } else { "False" }, "reason": reason, "message": message,
        "lastTransitionTime": now()})];
    if let Some(scheduled) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
    {
        conditions.push(json!({"type": "PodScheduled", "status": scheduled.status,
            "reason": scheduled.reason.clone().unwrap_or_else(|| "PodScheduled".into()),
            "message": scheduled.message.clone().unwrap_or_default(),
            "lastTransitionTime": now()}));
    }
    let live_ips = if pod.is_some() { ips } else { Vec::new() };
    let Some(sandbox) = custom::update(inner, shared, "sandboxes", ns, name, |s| {
        s["status"] = json!({"conditions": conditions, "podIPs": live_ips,
            "selector": format!("agents.x-k8s.io/sandbox-name-hash={name}")});
    }) else {
        return;
    };
    match owner(&sandbox) {
        Some((kind, claim)) if kind == "SandboxClaim" => {
            mirror_claim(inner, shared, ns, &claim, name)
        }
        Some((kind, pool)) if kind == "SandboxWarmPool" => pool_status(inner, shared, ns, &pool),
        _ => {}
    }
}

/// A claim's status from its Sandbox's: its name and podIPs, its Ready condition.
fn mirror_claim(inner: &mut Inner, shared: &Shared, ns: &str, claim: &str, sandbox: &str) {
    let Some(object) = inner
        .custom
        .get(&("sandboxes", ns.to_string(), sandbox.to_string()))
        .cloned()
    else {
        return;
    };
    let ready = ready_condition(&object).cloned().unwrap_or_else(|| {
        json!({"type": "Ready", "status": "False", "reason": "SandboxNotReady",
            "message": "Sandbox is not ready", "lastTransitionTime": now()})
    });
    let ips = object["status"]["podIPs"].clone();
    custom::update(inner, shared, "sandboxclaims", ns, claim, |c| {
        c["status"] = json!({"conditions": [ready],
            "sandbox": {"name": sandbox, "podIPs": ips}});
    });
}
