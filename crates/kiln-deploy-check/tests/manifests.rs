//! Every file under `deploy/`: Kubernetes objects into their API types (unknown fields
//! fail), kustomizations complete and closed, `kiln.toml` files valid Kiln configurations,
//! `KILN_*` variables naming real settings, and the promises of the manifests (replicas,
//! probes, RBAC) kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kiln_config::{Config, Overrides};
use kiln_deploy_check::{check_kustomization, check_object, files_under, yaml_documents};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn kubernetes_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

fn is_kustomization(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "kustomization.yaml")
}

/// Every Kubernetes object under `deploy/kubernetes`, with its file.
fn objects() -> Vec<(PathBuf, Value)> {
    let mut objects = Vec::new();
    for path in files_under(&kubernetes_dir(), &[".yaml", ".yml"]).unwrap() {
        if is_kustomization(&path) {
            continue;
        }
        for object in yaml_documents(&path).unwrap() {
            objects.push((path.clone(), object));
        }
    }
    objects
}

#[test]
fn every_kubernetes_object_parses_into_its_type() {
    let objects = objects();
    let problems: Vec<String> = objects
        .iter()
        .filter_map(|(path, object)| {
            check_object(object).err().map(|e| {
                format!(
                    "{}: {} {}: {e}",
                    path.display(),
                    object["kind"],
                    object["metadata"]["name"]
                )
            })
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(objects.len() >= 15, "only {} objects", objects.len());
}

/// Each kustomization names files that exist, and every manifest and `kiln.toml` is named
/// by one (a file nothing applies is a mistake waiting to happen).
#[test]
fn kustomizations_are_complete_and_nothing_is_left_out() {
    let kustomizations: Vec<PathBuf> =
        files_under(&kubernetes_dir(), &["kustomization.yaml"]).unwrap();
    let mut named = BTreeSet::new();
    for path in &kustomizations {
        let (_, paths) = check_kustomization(path).unwrap_or_else(|e| panic!("{e}"));
        named.extend(paths.iter().map(|p| p.canonicalize().unwrap()));
    }
    let dirs: BTreeSet<String> = kustomizations
        .iter()
        .map(|p| {
            let dir = p.parent().unwrap().strip_prefix(kubernetes_dir()).unwrap();
            dir.display().to_string()
        })
        .collect();
    for overlay in [
        "base",
        "pods-mode",
        "node-mode",
        "components/postgres",
        "examples/laptop",
    ] {
        assert!(
            dirs.contains(overlay),
            "no kustomization in {overlay}: {dirs:?}"
        );
    }
    let files = files_under(&kubernetes_dir(), &[".yaml", ".yml", ".toml"]).unwrap();
    let orphans: Vec<String> = files
        .iter()
        .filter(|f| !is_kustomization(f) && !named.contains(&f.canonicalize().unwrap()))
        .map(|f| f.display().to_string())
        .collect();
    assert!(orphans.is_empty(), "named by no kustomization: {orphans:?}");
}

fn load(text: &str) -> Result<Config, kiln_config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kiln.toml");
    std::fs::write(&file, text).unwrap();
    Config::load(Some(&file), &Overrides::default())
}

fn kiln_tomls() -> Vec<PathBuf> {
    let tomls = files_under(&deploy_dir(), &[".toml"]).unwrap();
    assert!(tomls.len() >= 2, "{tomls:?}");
    tomls
}

/// Every `kiln.toml` under `deploy/` loads as Kiln's `Config` whole (an unknown key fails).
#[test]
fn kiln_toml_files_parse_as_kilns_config() {
    for path in kiln_tomls() {
        let text = std::fs::read_to_string(&path).unwrap();
        let config = load(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(config.listen.port(), 8000, "{}", path.display());
    }
}

/// `KILN_A__B` names the setting `a.b` (as `kiln-config` reads the environment).
fn names_a_setting(variable: &str, settings: &Value) -> bool {
    let Some(rest) = variable.strip_prefix("KILN_") else {
        return true;
    };
    if matches!(variable, "KILN_CONFIG" | "KILN_AGENT_BIN") {
        return true; // read by the command line and the agent lookup, not settings
    }
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    let mut at = settings;
    for key in &path {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

#[test]
fn kiln_variables_name_real_settings() {
    let settings = serde_json::to_value(Config::default()).unwrap();
    let mut seen = 0;
    for (path, object) in objects() {
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned();
        for container in containers.unwrap_or_default() {
            for env in container["env"].as_array().cloned().unwrap_or_default() {
                let name = env["name"].as_str().unwrap();
                seen += usize::from(name.starts_with("KILN_"));
                assert!(
                    names_a_setting(name, &settings),
                    "{}: {name}",
                    path.display()
                );
            }
        }
    }
    let compose = yaml_documents(&deploy_dir().join("docker-compose.yml")).unwrap();
    for service in compose[0]["services"].as_object().unwrap().values() {
        for name in service["environment"]
            .as_object()
            .into_iter()
            .flat_map(|e| e.keys())
        {
            seen += 1;
            assert!(
                names_a_setting(name, &settings),
                "docker-compose.yml: {name}"
            );
        }
    }
    assert!(seen >= 8, "only {seen} KILN_ variables");
    assert!(
        !names_a_setting("KILN_AUTH_JWT_SECRET", &settings),
        "the check cannot fail"
    );
}

#[test]
fn servers_have_replicas_probes_and_a_narrow_role() {
    let objects = objects();
    let mut servers = 0;
    for (path, object) in &objects {
        let kind = object["kind"].as_str().unwrap();
        if kind == "Deployment" && object["metadata"]["name"] == "kiln-api" {
            assert!(
                object["spec"]["replicas"].as_u64().unwrap() >= 2,
                "{}",
                path.display()
            );
        }
        if object["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            != "server"
        {
            continue;
        }
        servers += 1;
        let kiln = &object["spec"]["template"]["spec"]["containers"][0];
        for (probe, route) in [
            ("startupProbe", "/health/startup"),
            ("livenessProbe", "/health/live"),
            ("readinessProbe", "/health/ready"),
        ] {
            assert_eq!(
                kiln[probe]["httpGet"]["path"],
                route,
                "{}: {probe}",
                path.display()
            );
        }
    }
    assert_eq!(
        servers, 2,
        "the Deployment (pods mode) and the DaemonSet (node mode)"
    );
    let allowed: BTreeSet<&str> = [
        "pods",
        "pods/status",
        "secrets",
        "networkpolicies",
        "events",
        "sandboxtemplates",
        "sandboxwarmpools",
        "sandboxclaims",
    ]
    .into();
    let roles: Vec<&Value> = objects
        .iter()
        .map(|(_, o)| o)
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        .collect();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["kind"], "Role", "no cluster-wide rights");
    for rule in roles[0]["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            let resource = resource.as_str().unwrap();
            assert!(allowed.contains(resource), "the role grants {resource}");
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if ["sandboxtemplates", "sandboxwarmpools"].contains(&resource) {
                // Made once; never changed or removed (a pool is shared and warm).
                assert!(
                    verbs.iter().all(|v| ["create", "get", "list"].contains(v)),
                    "{resource}: {verbs:?}"
                );
            } else if !["pods", "secrets", "networkpolicies", "sandboxclaims"].contains(&resource) {
                assert!(
                    verbs.iter().all(|v| ["get", "list", "watch"].contains(v)),
                    "{resource}: {verbs:?}"
                );
            }
        }
    }
}

/// What kustomize makes of each overlay (generated ConfigMaps and Secrets included)
/// parses too, when `kubectl` is installed (`kubectl kustomize` needs no cluster).
#[test]
fn built_overlays_parse_into_their_types() {
    let Ok(version) = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("SKIPPED: kubectl is not installed (kustomize's output is not checked)");
        return;
    };
    assert!(version.status.success());
    for overlay in ["pods-mode", "node-mode", "examples/laptop"] {
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(kubernetes_dir().join(overlay))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{overlay}: {stderr}");
        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join("built.yaml");
        std::fs::write(&built, &out.stdout).unwrap();
        let objects = yaml_documents(&built).unwrap();
        for object in &objects {
            check_object(object).unwrap_or_else(|e| panic!("{overlay}: {}: {e}", object["kind"]));
        }
        let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        let server = if overlay == "node-mode" {
            "DaemonSet"
        } else {
            "Deployment"
        };
        assert!(
            kinds.contains(server) && kinds.contains("ConfigMap"),
            "{overlay}: {kinds:?}"
        );
    }
}
