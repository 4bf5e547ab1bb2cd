//! The objects a sandbox is made of: its Pod (the agent injected by an init container,
//! limits, no privileges) and its NetworkPolicy (no egress but to the server's egress
//! listener when the sandbox has an allowlist; ingress to the agent only).
//! Pure functions of the spec and the settings, so they are tested field by field.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, Pod, PodSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
    SecretKeySelector, SecurityContext, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

use super::KubeSettings;
use crate::spec::{Limits, SandboxId, SandboxSpec};

/// Where the agent is inside every sandbox Pod (an `emptyDir` the init container fills).
pub const AGENT_DIR: &str = "/.kiln";
/// The agent binary inside.
pub const AGENT_PATH: &str = "/.kiln/agent";
/// The main container's name.
pub const SANDBOX_CONTAINER: &str = "sandbox";
/// The init container's name.
pub const INSTALL_CONTAINER: &str = "kiln-agent-install";
/// Every Kiln Pod carries it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kiln");
/// The node (server) that owns the Pod: reconciliation looks at its own only.
pub const NODE_LABEL: &str = "kiln.dev/node";
/// The Pod's own name, for the NetworkPolicy's selector.
pub const SANDBOX_LABEL: &str = "kiln.dev/sandbox";
/// The sandbox id exactly (ids may hold `_` and capitals, which names may not).
pub const ID_ANNOTATION: &str = "kiln.dev/sandbox-id";
/// The variable the agent reads its secret from.
pub const SECRET_ENV: &str = "KILN_AGENT_SECRET";
/// The key of the agent's secret in the sandbox's Secret.
pub const SECRET_KEY: &str = "agent-secret";
/// The Pod's IP (downward API), which the agent listens on.
const POD_IP_ENV: &str = "KILN_POD_IP";
const AGENT_VOLUME: &str = "kiln-agent";

/// The Pod (and NetworkPolicy) name of a sandbox: a DNS label, ≤ 63 characters, distinct
/// for distinct ids (a hash of the exact id ends it, since lowering and `_` → `-` merge).
pub fn pod_name(id: &SandboxId) -> String {
    let readable: String = id
        .as_str()
        .chars()
        .take(40)
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' => c,
            _ => '-',
        })
        .collect();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("kiln-{}-{:08x}", readable.trim_matches('-'), hash as u32)
}

pub(super) fn labels(settings: &KubeSettings, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (NODE_LABEL.to_string(), settings.node.clone()),
        (SANDBOX_LABEL.to_string(), name.to_string()),
    ])
}

/// The label selector of this node's Pods.
pub fn node_selector(settings: &KubeSettings) -> String {
    format!(
        "{}={},{NODE_LABEL}={}",
        MANAGED_BY.0, MANAGED_BY.1, settings.node
    )
}

fn resources(limits: &Limits) -> ResourceRequirements {
    let mut amounts = BTreeMap::new();
    if let Some(memory) = limits.memory_bytes {
        amounts.insert("memory".to_string(), Quantity(memory.to_string()));
    }
    if let Some(cpu) = limits.cpu_millicores {
        amounts.insert("cpu".to_string(), Quantity(format!("{cpu}m")));
    }
    if let Some(disk) = limits.disk_bytes {
        // The kubelet evicts a Pod whose writable layer and emptyDirs pass this.
        amounts.insert("ephemeral-storage".to_string(), Quantity(disk.to_string()));
    }
    // Requests = limits: the Guaranteed class, so a sandbox is not the first evicted.
    ResourceRequirements {
        requests: (!amounts.is_empty()).then(|| amounts.clone()),
        limits: (!amounts.is_empty()).then_some(amounts),
        ..Default::default()
    }
}

fn locked_down() -> SecurityContext {
    SecurityContext {
        // The runtime's masked and read-only `/proc` paths stay (`Unmasked` drops them).
        proc_mount: Some("Default".into()),
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        // Root inside without capabilities, as on the local and Docker backends: the
        // images (SWE-bench's) expect to write everywhere.
        run_as_user: Some(0),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The sandbox's Pod: the image as asked, its command replaced by the agent (copied in
/// by an init container from `settings.agent_image`), listening on the Pod's IP with
/// the secret of its Secret ([`agent_secret`]).
pub fn sandbox_pod(settings: &KubeSettings, spec: &SandboxSpec, image: &str) -> Pod {
    pod_reading_secret(settings, spec, image, &pod_name(&spec.id))
}

/// [`sandbox_pod`] with the agent's secret from Secret `secret` (agent-sandbox mode: its
/// template's).
pub(super) fn pod_reading_secret(
    settings: &KubeSettings,
    spec: &SandboxSpec,
    image: &str,
    secret: &str,
) -> Pod {
    let name = pod_name(&spec.id);
    let port = i32::from(settings.agent_port);
    let mut env: Vec<EnvVar> = spec
        .env
        .iter()
        .filter(|(k, _)| k.as_str() != SECRET_ENV && k.as_str() != POD_IP_ENV)
        .map(|(k, v)| env_var(k, v))
        .collect();
    env.push(EnvVar {
        name: POD_IP_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    });
    // From a Secret, not the Pod spec: reading Pods must not be enough to reach agents.
    env.push(EnvVar {
        name: SECRET_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: SECRET_KEY.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    });
    let agent_mount = |read_only| VolumeMount {
        name: AGENT_VOLUME.into(),
        mount_path: AGENT_DIR.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut install_command = settings.agent_copy_command.clone();
    install_command.push(AGENT_PATH.into());
    let install = Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(settings.agent_image.clone()),
        command: Some(install_command),
        volume_mounts: Some(vec![agent_mount(false)]),
        // It writes only the agent into its volume. (The sandbox's own root stays
        // writable: the images expect to write everywhere.)
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..locked_down()
        }),
        resources: Some(resources(&Limits {
            memory_bytes: Some(64 << 20),
            disk_bytes: None,
            pids: None,
            cpu_millicores: Some(100),
        })),
        ..Default::default()
    };
    let sandbox = Container {
        name: SANDBOX_CONTAINER.into(),
        image: Some(image.to_string()),
        command: Some(vec![AGENT_PATH.into()]),
        args: Some(vec![
            "--listen-tcp".into(),
            format!("$({POD_IP_ENV}):{port}"),
        ]),
        env: Some(env),
        working_dir: spec.workdir.clone(),
        ports: Some(vec![ContainerPort {
            container_port: port,
            name: Some("kiln-agent".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port),
                host: None,
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        resources: Some(resources(&spec.limits)),
        security_context: Some(locked_down()),
        volume_mounts: Some(vec![agent_mount(true)]),
        ..Default::default()
    };
    let hostname = valid_label(&spec.hostname).then(|| spec.hostname.clone());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(settings, &name)),
            annotations: Some(BTreeMap::from([(
                ID_ANNOTATION.to_string(),
                spec.id.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: Some(vec![install]),
            containers: vec![sandbox],
            volumes: Some(vec![Volume {
                name: AGENT_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("256Mi".into())),
                    medium: None,
                }),
                ..Default::default()
            }]),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            // The agent is PID 1 of its own pid namespace (no pause process in it), so
            // the sandbox's signals to it are told from the kubelet's (`kiln-agent`'s
            // signals.rs); nothing of the node's is shared.
            share_process_namespace: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            host_network: Some(false),
            host_users: settings.user_namespace.then_some(false),
            runtime_class_name: settings.runtime_class.clone(),
            hostname,
            termination_grace_period_seconds: Some(1),
            ..Default::default()
        }),
        status: None,
    }
}

fn egress_rule(to: SocketAddr) -> NetworkPolicyEgressRule {
    let prefix = if to.is_ipv4() { 32 } else { 128 };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: format!("{}/{prefix}", to.ip()),
                except: None,
            }),
            ..Default::default()
        }]),
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(to.port()))),
            protocol: Some("TCP".into()),
            end_port: None,
        }]),
    }
}

/// The Secret holding the agent's secret, named like the Pod.
pub fn agent_secret(settings: &KubeSettings, id: &SandboxId, secret: &str) -> Secret {
    secret_named(settings, &pod_name(id), secret)
}

/// A Secret `name` holding the agent's secret.
pub(super) fn secret_named(settings: &KubeSettings, name: &str, secret: &str) -> Secret {
    let name = name.to_string();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(settings, &name)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(secret.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Makes the Pod's agent relay [`crate::EGRESS_PROXY_ADDR`] to the server's egress
/// listener at `to`, as sandbox `id` (the secret it shows is its `KILN_AGENT_SECRET`).
pub fn relay_egress(pod: &mut Pod, id: &SandboxId, to: SocketAddr) {
    let main = pod.spec.as_mut().and_then(|spec| {
        spec.containers
            .iter_mut()
            .find(|c| c.name == SANDBOX_CONTAINER)
    });
    if let Some(main) = main {
        main.args.get_or_insert_with(Vec::new).extend([
            "--egress".into(),
            format!("{}=tcp:{to}", crate::EGRESS_PROXY_ADDR),
            "--sandbox-id".into(),
            id.to_string(),
        ]);
    }
}

/// Ingress only to the agent's port (the server dials it); egress to nothing, or with
/// `egress_to` (a sandbox with an allowlist) to exactly that IP and TCP port: the
/// server's egress listener, which decides where its connections go.
pub fn network_policy(
    settings: &KubeSettings,
    id: &SandboxId,
    egress_to: Option<SocketAddr>,
) -> NetworkPolicy {
    let name = pod_name(id);
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(settings, &name)),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(SANDBOX_LABEL.to_string(), name)])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            egress: Some(egress_to.map(egress_rule).into_iter().collect()),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(settings.agent_port))),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
        }),
    }
}

fn valid_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings() -> KubeSettings {
        let mut s = KubeSettings::new("node-a");
        s.runtime_class = Some("gvisor".into());
        s
    }

    fn spec() -> SandboxSpec {
        let mut spec = SandboxSpec::image(SandboxId::new("Sess_01").unwrap(), "python:3.12");
        spec.env.insert("LANG".into(), "C.UTF-8".into());
        spec.env.insert(SECRET_ENV.into(), "smuggled".into());
        spec.workdir = Some("/testbed".into());
        spec.limits = Limits {
            memory_bytes: Some(1 << 30),
            disk_bytes: Some(5 << 30),
            pids: Some(100),
            cpu_millicores: Some(1500),
        };
        spec
    }

    #[test]
    fn names_are_dns_labels_and_distinct() {
        let a = pod_name(&SandboxId::new("Sess_01").unwrap());
        let b = pod_name(&SandboxId::new("sess-01").unwrap());
        assert_ne!(a, b);
        for name in [&a, &b, &pod_name(&SandboxId::new("_".repeat(64)).unwrap())] {
            assert!(valid_label(name), "{name}");
        }
    }

    #[test]
    fn the_pod_injects_the_agent_and_locks_down() {
        let pod = serde_json::to_value(sandbox_pod(&settings(), &spec(), "python:3.12")).unwrap();
        let mut userns = settings();
        userns.user_namespace = true;
        let in_userns = serde_json::to_value(sandbox_pod(&userns, &spec(), "python:3.12")).unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["runtimeClassName"], "gvisor");
        assert_eq!(spec["volumes"][0]["emptyDir"]["sizeLimit"], "256Mi");
        assert_eq!(spec["shareProcessNamespace"], false);
        for host in ["hostPID", "hostIPC", "hostNetwork"] {
            assert_eq!(spec[host], false, "{host}");
        }
        assert!(
            spec.get("hostUsers").is_none(),
            "user namespaces are opt-in"
        );
        assert_eq!(in_userns["spec"]["hostUsers"], false);
        let init = &spec["initContainers"][0];
        assert_eq!(init["image"], KubeSettings::new("n").agent_image);
        assert_eq!(
            init["command"],
            serde_json::json!(["cp", "/kiln-agent", "/.kiln/agent"])
        );
        assert_eq!(init["volumeMounts"][0]["mountPath"], "/.kiln");
        let main = &spec["containers"][0];
        assert_eq!(main["image"], "python:3.12");
        assert_eq!(main["command"], serde_json::json!(["/.kiln/agent"]));
        assert_eq!(
            main["args"],
            serde_json::json!(["--listen-tcp", "$(KILN_POD_IP):7171"])
        );
        assert_eq!(main["workingDir"], "/testbed");
        assert_eq!(main["volumeMounts"][0]["readOnly"], true);
        assert_eq!(main["readinessProbe"]["tcpSocket"]["port"], 7171);
        for container in [init, main] {
            let sc = &container["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["privileged"], false);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
            assert_eq!(sc["procMount"], "Default");
        }
        assert_eq!(init["securityContext"]["readOnlyRootFilesystem"], true);
        let limits = &main["resources"]["limits"];
        assert_eq!(limits["memory"], (1u64 << 30).to_string());
        assert_eq!(limits["cpu"], "1500m");
        assert_eq!(limits["ephemeral-storage"], (5u64 << 30).to_string());
        assert_eq!(main["resources"]["requests"], *limits);
        let env = main["env"].as_array().unwrap();
        let secrets: Vec<_> = env.iter().filter(|e| e["name"] == SECRET_ENV).collect();
        assert_eq!(secrets.len(), 1, "the caller cannot set the agent's secret");
        assert!(
            secrets[0].get("value").is_none(),
            "the secret is not in the Pod spec"
        );
        assert_eq!(
            secrets[0]["valueFrom"]["secretKeyRef"]["name"],
            pod["metadata"]["name"]
        );
        assert_eq!(secrets[0]["valueFrom"]["secretKeyRef"]["key"], SECRET_KEY);
        let secret = serde_json::to_value(agent_secret(
            &settings(),
            &SandboxId::new("Sess_01").unwrap(),
            "abc",
        ))
        .unwrap();
        assert_eq!(secret["data"][SECRET_KEY], "YWJj");
        assert_eq!(secret["metadata"]["name"], pod["metadata"]["name"]);
        assert!(env
            .iter()
            .any(|e| e["name"] == "LANG" && e["value"] == "C.UTF-8"));
        assert!(env.iter().any(|e| e["name"] == "KILN_POD_IP"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"));
        let meta = &pod["metadata"];
        assert_eq!(meta["annotations"][ID_ANNOTATION], "Sess_01");
        assert_eq!(meta["labels"][NODE_LABEL], "node-a");
        assert_eq!(meta["labels"][SANDBOX_LABEL], meta["name"]);
        assert_eq!(meta["namespace"], "kiln-sandboxes");
    }

    #[test]
    fn the_network_policy_denies_egress_and_opens_only_the_agent() {
        let id = SandboxId::new("Sess_01").unwrap();
        let policy = serde_json::to_value(network_policy(&settings(), &id, None)).unwrap();
        let spec = &policy["spec"];
        assert_eq!(
            spec["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(spec["egress"], serde_json::json!([]));
        assert_eq!(
            spec["ingress"][0]["ports"],
            serde_json::json!([{"port": 7171, "protocol": "TCP"}])
        );
        assert_eq!(
            spec["podSelector"]["matchLabels"][SANDBOX_LABEL],
            pod_name(&id)
        );
    }

    #[test]
    fn a_sandbox_with_egress_may_reach_the_egress_listener_only() {
        let id = SandboxId::new("Sess_01").unwrap();
        let to: std::net::SocketAddr = "10.0.0.5:3129".parse().unwrap();
        let policy = serde_json::to_value(network_policy(&settings(), &id, Some(to))).unwrap();
        assert_eq!(
            policy["spec"]["egress"],
            serde_json::json!([{
                "to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}],
                "ports": [{"port": 3129, "protocol": "TCP"}],
            }])
        );
        let spec = SandboxSpec::image(id.clone(), "python:3.12");
        let mut pod = sandbox_pod(&settings(), &spec, "python:3.12");
        relay_egress(&mut pod, &id, to);
        let pod = serde_json::to_value(pod).unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["args"],
            serde_json::json!([
                "--listen-tcp",
                "$(KILN_POD_IP):7171",
                "--egress",
                "127.0.0.1:3128=tcp:10.0.0.5:3129",
                "--sandbox-id",
                "Sess_01"
            ])
        );
    }
}
