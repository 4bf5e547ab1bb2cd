//! Checks of the deployment files under `deploy/` (run by `cargo test -p
//! kiln-deploy-check`): every Kubernetes object parses into its `k8s-openapi` type with no
//! field dropped (a misspelt or misplaced field fails instead of being ignored by the
//! cluster), every kustomization names files that exist and fields kustomize knows, and
//! every `kiln.toml` a ConfigMap carries is a valid Kiln configuration.
#![forbid(unsafe_code)]

mod kustomize;
mod objects;

use std::path::{Path, PathBuf};

pub use kustomize::{check_kustomization, Kustomization};
pub use objects::{check_object, dropped_keys};

/// What is wrong with one file.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl CheckError {
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        CheckError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Every file under `dir` whose name ends with one of `extensions`, sorted.
pub fn files_under(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, CheckError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| CheckError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| CheckError::Read {
                    path: dir.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| extensions.iter().any(|e| n.ends_with(e)))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The YAML documents of one file, as JSON values (empty documents left out).
pub fn yaml_documents(path: &Path) -> Result<Vec<serde_json::Value>, CheckError> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value =
            serde_json::Value::deserialize(document).map_err(|source| CheckError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}
