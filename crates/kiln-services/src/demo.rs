//! The bundled `kiln-demo` dataset, compiled into the binary so that a fresh server has
//! real tasks to offer with no download. Its sources and builder live in
//! `datasets/kiln-demo/`.
use include_dir::{include_dir, Dir};

use crate::datasets::{DatasetService, ImportError, ImportRequest};
use crate::error::{ServiceError, ServiceResult};

static DEMO: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../datasets/kiln-demo");

pub const DEMO_DATASET: &str = "kiln-demo";

/// Writes the embedded demo dataset as a directory `<parent>/kiln-demo/` holding
/// `samples.jsonl` and `repos/*.bundle` (what the image builder reads). Returns its path.
pub fn write_demo_dataset(parent: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    let dir = parent.join(DEMO_DATASET);
    std::fs::create_dir_all(dir.join("repos"))?;
    let records = DEMO.get_file("samples.jsonl").ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "this build has no demo dataset",
        )
    })?;
    std::fs::write(dir.join("samples.jsonl"), records.contents())?;
    for file in DEMO
        .get_dir("repos")
        .map(|d| d.files())
        .into_iter()
        .flatten()
    {
        if let Some(name) = file.path().file_name() {
            std::fs::write(dir.join("repos").join(name), file.contents())?;
        }
    }
    Ok(dir)
}

/// Imports the demo dataset unless the store already has one by that name. Returns the
/// number of samples imported (0 when it was already there).
pub async fn load_demo_dataset(datasets: &DatasetService) -> ServiceResult<u64> {
    if datasets.dataset_exists(DEMO_DATASET).await? {
        return Ok(0);
    }
    let Some(records) = DEMO
        .get_file("samples.jsonl")
        .and_then(|f| f.contents_utf8())
    else {
        tracing::warn!(
            "this build has no demo dataset (datasets/kiln-demo/samples.jsonl was missing)"
        );
        return Ok(0);
    };
    // The importer reads repositories from disk: write the embedded bundles out.
    let staging = tempfile::tempdir()
        .map_err(|e| ServiceError::Internal(format!("cannot stage demo: {e}")))?;
    let repos = staging.path().join("kiln-demo");
    std::fs::create_dir_all(&repos)
        .map_err(|e| ServiceError::Internal(format!("cannot stage demo: {e}")))?;
    if let Some(dir) = DEMO.get_dir("repos") {
        for file in dir.files() {
            if let Some(name) = file.path().file_name() {
                std::fs::write(repos.join(name), file.contents())
                    .map_err(|e| ServiceError::Internal(format!("cannot stage demo: {e}")))?;
            }
        }
    }
    let summary = datasets
        .import(ImportRequest {
            dataset: DEMO_DATASET,
            description: Some("Kiln's bundled demo: small real projects in Python, Rust and JavaScript, one real bug each".into()),
            version_description: Some("bundled with Kiln".into()),
            text: records,
            repos_dir: Some(staging.path()),
        })
        .await
        .map_err(|e| match e {
            ImportError::Records(problems) => ServiceError::Internal(format!(
                "the bundled demo dataset is broken: {}",
                problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; ")
            )),
            ImportError::Service(e) => e,
        })?;
    Ok(summary.created + summary.updated)
}
