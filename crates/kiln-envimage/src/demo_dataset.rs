//! [`build_demo_images`]: every image the bundled `kiln-demo` dataset needs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_image::{Image, ImageStore, Reference};
use serde::Deserialize;

use crate::base_image::build_base_image;
use crate::build_progress::BuildProgress;
use crate::error::{EnvImageError, Result};
use crate::image_spec::{BuildOptions, ImageSpec};
use crate::sample_image::build_sample_layer;

/// The fields of a `samples.jsonl` record that images depend on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct SampleRecord {
    pub instance_id: String,
    /// `owner/name`; the bundle is `repos/<name>.bundle` next to `samples.jsonl`.
    pub repo: String,
    pub base_commit: String,
    /// The base image reference, e.g. `kiln-demo/python:1`.
    pub image: String,
}

/// What [`build_demo_images`] stored.
#[derive(Clone, Debug)]
pub struct DemoImages {
    /// The base images, by reference.
    pub bases: BTreeMap<String, Image>,
    /// One image per sample, by instance id.
    pub samples: BTreeMap<String, Image>,
}

/// The store reference of a sample's image: `<dataset>/sample/<instance_id>:1`, lowercased
/// (image repositories must be). For the demo: `kiln-demo/sample/kiln-demo__inifile-1:1`.
pub fn sample_reference(dataset: &str, instance_id: &str) -> Result<String> {
    let reference = format!("{dataset}/sample/{instance_id}:1").to_ascii_lowercase();
    Reference::parse(&reference)?;
    Ok(reference)
}

/// Reads `samples.jsonl` of a dataset directory.
pub fn read_samples(dataset_dir: &Path) -> Result<Vec<SampleRecord>> {
    let path = dataset_dir.join("samples.jsonl");
    let text = fs::read_to_string(&path).map_err(EnvImageError::io("read", &path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|source| EnvImageError::Json {
                what: format!("{}:{}", path.display(), n + 1),
                source,
            })
        })
        .collect()
}

/// The git bundle of a record's repository: `repos/<name>.bundle` in the dataset directory.
pub fn bundle_path(dataset_dir: &Path, record: &SampleRecord) -> Result<PathBuf> {
    let name = record.repo.rsplit('/').next().unwrap_or(&record.repo);
    if name.is_empty() || name.starts_with('.') || name.contains('\\') {
        return Err(EnvImageError::invalid("repo", format!("{:?}", record.repo)));
    }
    Ok(dataset_dir.join("repos").join(format!("{name}.bundle")))
}

/// Builds the base images the samples of `dataset_dir` name (from [`ImageSpec::demo_specs`])
/// and one sample image per record, named by [`sample_reference`] with the dataset
/// directory's name. Already-built images are skipped (see the two build functions).
pub fn build_demo_images(
    store: &ImageStore,
    dataset_dir: &Path,
    options: &BuildOptions,
    progress: &BuildProgress,
) -> Result<DemoImages> {
    let records = read_samples(dataset_dir)?;
    let dataset = dataset_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| EnvImageError::invalid("dataset dir", dataset_dir.display().to_string()))?;
    let specs: BTreeMap<String, ImageSpec> = ImageSpec::demo_specs()
        .into_iter()
        .map(|s| (s.reference.clone(), s))
        .collect();
    let mut bases = BTreeMap::new();
    for record in &records {
        if bases.contains_key(&record.image) {
            continue;
        }
        let spec = specs.get(&record.image).ok_or_else(|| {
            EnvImageError::invalid(
                "sample image",
                format!(
                    "{} names {}, which has no spec",
                    record.instance_id, record.image
                ),
            )
        })?;
        bases.insert(
            record.image.clone(),
            build_base_image(spec, store, options, progress)?,
        );
    }
    let mut samples = BTreeMap::new();
    for record in &records {
        let base = bases
            .get(&record.image)
            .ok_or_else(|| EnvImageError::invalid("sample image", record.image.clone()))?;
        let reference = sample_reference(dataset, &record.instance_id)?;
        let bundle = bundle_path(dataset_dir, record)?;
        let image = build_sample_layer(
            base,
            &bundle,
            &record.base_commit,
            &reference,
            store,
            options,
            progress,
        )?;
        samples.insert(record.instance_id.clone(), image);
    }
    Ok(DemoImages { bases, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_references_are_valid_and_lowercase() {
        assert_eq!(
            sample_reference("kiln-demo", "kiln-demo__inifile-1").unwrap(),
            "kiln-demo/sample/kiln-demo__inifile-1:1"
        );
        assert_eq!(
            sample_reference("swe", "Org__Repo-12").unwrap(),
            "swe/sample/org__repo-12:1"
        );
        assert!(sample_reference("kiln-demo", "bad id").is_err());
    }

    #[test]
    fn reads_the_bundled_dataset() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/kiln-demo");
        let records = read_samples(&dir).unwrap();
        assert!(records.len() >= 3);
        let specs: Vec<String> = ImageSpec::demo_specs()
            .into_iter()
            .map(|s| s.reference)
            .collect();
        for r in &records {
            assert!(specs.contains(&r.image), "{} has no spec", r.image);
            assert!(bundle_path(&dir, r).unwrap().is_file(), "{}", r.repo);
            assert_eq!(r.base_commit.len(), 40);
        }
    }
}
