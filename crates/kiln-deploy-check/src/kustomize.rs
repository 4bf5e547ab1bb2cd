//! Kustomization files: the fields kustomize knows (those used here; a new one is added to
//! [`Kustomization`] when a manifest needs it), and the files they name must exist.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::CheckError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default)]
    pub labels: Vec<Labels>,
    #[serde(default)]
    pub config_map_generator: Vec<Generator>,
    #[serde(default)]
    pub secret_generator: Vec<Generator>,
    #[serde(default)]
    pub images: Vec<Image>,
    #[serde(default)]
    pub patches: Vec<Patch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Labels {
    pub pairs: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Generator {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub literals: Vec<String>,
    #[serde(default)]
    pub envs: Vec<String>,
    pub options: Option<GeneratorOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorOptions {
    #[serde(default)]
    pub disable_name_suffix_hash: bool,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<serde_json::Value>,
}

impl Kustomization {
    /// The local files this kustomization reads besides resources: generators' sources
    /// (a `files` entry may be `key=path`) and patch files.
    pub fn input_files(&self) -> Vec<String> {
        let generators = self
            .config_map_generator
            .iter()
            .chain(&self.secret_generator);
        let mut files: Vec<String> = generators
            .flat_map(|g| {
                g.files
                    .iter()
                    .map(|f| f.split_once('=').map_or(f.as_str(), |(_, p)| p))
                    .chain(g.envs.iter().map(String::as_str))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        files.extend(self.patches.iter().filter_map(|p| p.path.clone()));
        files
    }
}

/// Reads the kustomization at `path` and checks it: its kind, and that each resource is
/// a file or a directory with a kustomization, each component a directory with a
/// Component, each input file there. Returns it with the paths it names, resolved.
pub fn check_kustomization(path: &Path) -> Result<(Kustomization, Vec<PathBuf>), CheckError> {
    let documents = crate::yaml_documents(path)?;
    let [document] = documents.as_slice() else {
        return Err(CheckError::invalid(path, "must hold exactly one document"));
    };
    let k: Kustomization = serde_json::from_value(document.clone())
        .map_err(|e| CheckError::invalid(path, e.to_string()))?;
    let want = match k.kind.as_str() {
        "Kustomization" => "kustomize.config.k8s.io/v1beta1",
        "Component" => "kustomize.config.k8s.io/v1alpha1",
        other => return Err(CheckError::invalid(path, format!("unknown kind {other:?}"))),
    };
    if k.api_version != want {
        return Err(CheckError::invalid(
            path,
            format!("{} must have apiVersion {want}", k.kind),
        ));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut named = Vec::new();
    for resource in &k.resources {
        let target = dir.join(resource);
        if !(target.is_file() || target.join("kustomization.yaml").is_file()) {
            return Err(CheckError::invalid(
                path,
                format!("resource {resource} is neither a file nor a kustomization directory"),
            ));
        }
        named.push(target);
    }
    for component in &k.components {
        let target = dir.join(component).join("kustomization.yaml");
        let (c, _) = check_kustomization(&target)
            .map_err(|e| CheckError::invalid(path, format!("component {component}: {e}")))?;
        if c.kind != "Component" {
            return Err(CheckError::invalid(
                path,
                format!("component {component} is a {}", c.kind),
            ));
        }
        named.push(dir.join(component));
    }
    for file in k.input_files() {
        let target = dir.join(&file);
        if !target.is_file() {
            return Err(CheckError::invalid(
                path,
                format!("file {file} does not exist"),
            ));
        }
        named.push(target);
    }
    Ok((k, named))
}
