//! `kiln images pull --dataset NAME`: every sample's environment image from a registry,
//! stored under the name the dataset's sessions run (`<dataset>/sample/<id>:1`, or the
//! record's `sample_image`). The source is the SWE-bench harness's official name,
//! `swebench/sweb.eval.x86_64.<instance id, lower case, `__` → `_1776_`>:latest` (or a 5.x
//! record's own `image` when it names one), on Docker Hub or the `--registry` mirror.
//! Layers already in the store (shared by instances of one repository and version) are
//! not fetched again; several images download at once.
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use kiln_config::Config;
use kiln_domain::SampleQuery;
use kiln_image::{ImageStore, PullOptions, Reference, RegistryConfig};
use kiln_services::Kiln;
use tokio::sync::Semaphore;

/// What the harness calls an instance's image (`swebench.harness.test_spec`).
pub fn official_image(instance_id: &str) -> String {
    format!(
        "swebench/sweb.eval.x86_64.{}:latest",
        instance_id.to_lowercase().replace("__", "_1776_")
    )
}

/// Where a sample's image comes from: its record's `image` when it is a harness image,
/// else the official name; a Docker Hub name goes to `mirror` when one is given.
fn source_image(
    record: &kiln_domain::SampleRecord,
    mirror: Option<&str>,
) -> anyhow::Result<String> {
    let name = match record.image.as_deref() {
        Some(image) if image.contains("sweb.eval.") => image.to_string(),
        _ => official_image(&record.instance_id),
    };
    let mut reference = Reference::parse(&name).with_context(|| format!("image {name:?}"))?;
    if let (None, Some(mirror)) = (&reference.registry, mirror) {
        reference.registry = Some(mirror.to_string());
    }
    Ok(reference.to_string())
}

pub async fn run(
    config: &Config,
    store: ImageStore,
    dataset: &str,
    mirror: Option<&str>,
    registry: RegistryConfig,
    jobs: usize,
) -> anyhow::Result<ExitCode> {
    let kiln = Kiln::open(config.clone()).await?;
    if !kiln.datasets.dataset_exists(dataset).await? {
        anyhow::bail!("no dataset {dataset:?} (`kiln datasets list`)");
    }
    let page = kiln
        .datasets
        .list_samples(&SampleQuery {
            dataset: Some(dataset.to_string()),
            ..SampleQuery::default()
        })
        .await?;
    let mut wanted = Vec::new();
    for sample in &page.samples {
        let target = kiln_services::sessions::session_image(dataset, &sample.record);
        wanted.push((source_image(&sample.record, mirror)?, target));
    }
    let total = wanted.len();
    let gate = Arc::new(Semaphore::new(jobs.max(1)));
    let options = Arc::new(PullOptions {
        registry,
        ..PullOptions::default()
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (source, target) in wanted {
        let (store, gate, options) = (store.clone(), Arc::clone(&gate), Arc::clone(&options));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let pulled = match store.pull(&source, &options).await {
                Ok(image) => image,
                Err(e) => return (target, Err(format!("{source}: {e}"))),
            };
            let tagged = tokio::task::spawn_blocking({
                let (store, from) = (store.clone(), pulled.reference().to_string());
                let target = target.clone();
                move || store.tag(&from, &target)
            })
            .await;
            match tagged {
                Ok(Ok(_)) => (target, Ok(source)),
                Ok(Err(e)) => (target, Err(format!("{source}: cannot name it: {e}"))),
                Err(e) => (target, Err(format!("{source}: {e}"))),
            }
        });
    }
    let (mut done, mut failed) = (0, Vec::new());
    while let Some(joined) = tasks.join_next().await {
        done += 1;
        match joined.context("a pull task failed")? {
            (target, Ok(source)) => println!("[{done}/{total}] {target} ← {source}"),
            (target, Err(why)) => {
                eprintln!("[{done}/{total}] {target}: {why}");
                failed.push(target);
            }
        }
    }
    if failed.is_empty() {
        println!("pulled {total} image(s) for {dataset}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "kiln: {} of {total} image(s) not pulled: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_names_follow_the_harness() {
        assert_eq!(
            official_image("astropy__astropy-12907"),
            "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest"
        );
        assert_eq!(
            official_image("Django__Django-11099"),
            "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
        );
    }

    #[test]
    fn a_mirror_replaces_docker_hub_only() {
        let mut record = kiln_domain::SampleRecord {
            instance_id: "octo__hello-1".into(),
            ..Default::default()
        };
        assert_eq!(
            source_image(&record, Some("127.0.0.1:5000")).unwrap(),
            "127.0.0.1:5000/swebench/sweb.eval.x86_64.octo_1776_hello-1:latest"
        );
        record.image = Some("ghcr.io/epoch/sweb.eval.x86_64.octo_1776_hello-1:v2".into());
        assert_eq!(
            source_image(&record, Some("127.0.0.1:5000")).unwrap(),
            "ghcr.io/epoch/sweb.eval.x86_64.octo_1776_hello-1:v2"
        );
        record.image = Some("kiln-demo/python:1".into());
        assert_eq!(
            source_image(&record, None).unwrap(),
            "swebench/sweb.eval.x86_64.octo_1776_hello-1:latest"
        );
    }
}
