//! Snapshots as `docker commit`: the container's files (not its bind-mounted workspace)
//! become an engine image `<prefix>-snapshots:<snapshot id>`, which forks start from and
//! which outlives a server restart like any image.

use bollard::models::ContainerConfig;
use std::collections::HashMap;

use bollard::query_parameters::{
    CommitContainerOptions, ListImagesOptionsBuilder, RemoveImageOptions,
};
use rand::Rng;

use super::image::EngineImage;
use super::{is_not_found, DockerRuntime};
use crate::error::{Result, RuntimeError};
use crate::spec::{SandboxId, Snapshot, SnapshotId};

impl DockerRuntime {
    fn snapshot_repo(&self) -> String {
        format!("{}-snapshots", self.settings.label_prefix)
    }

    fn snapshot_image(&self, id: &SnapshotId) -> String {
        format!("{}:{id}", self.snapshot_repo())
    }

    /// Commits the container of `id` (paused meanwhile, so the copy is consistent).
    pub(super) async fn commit(&self, id: &SandboxId, container: &str) -> Result<Snapshot> {
        let snapshot = SnapshotId::new(format!("snap-{}", random_hex()))?;
        let options = CommitContainerOptions {
            container: Some(container.to_string()),
            repo: Some(self.snapshot_repo()),
            tag: Some(snapshot.to_string()),
            comment: Some(format!("kiln snapshot of sandbox {id}")),
            pause: true,
            ..Default::default()
        };
        self.docker
            .commit_container(options, ContainerConfig::default())
            .await
            .map_err(|e| super::engine_err(id, "the engine cannot commit it", &e))?;
        let size_bytes = self.own_size(&snapshot, container).await;
        Ok(Snapshot {
            id: snapshot,
            sandbox: id.clone(),
            size_bytes,
        })
    }

    /// What the snapshot adds over the image its container started from.
    async fn own_size(&self, snapshot: &SnapshotId, container: &str) -> u64 {
        let size = |image: Option<bollard::models::ImageInspect>| {
            image
                .and_then(|i| i.size)
                .and_then(|s| u64::try_from(s).ok())
        };
        let committed = size(
            self.docker
                .inspect_image(&self.snapshot_image(snapshot))
                .await
                .ok(),
        );
        let base_id = self
            .docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|c| c.image);
        let base = match base_id {
            Some(base) => size(self.docker.inspect_image(&base).await.ok()),
            None => None,
        };
        committed.unwrap_or(0).saturating_sub(base.unwrap_or(0))
    }

    /// The image a fork of `snapshot` starts from.
    pub(super) async fn snapshot_engine_image(&self, snapshot: &SnapshotId) -> Result<EngineImage> {
        let name = self.snapshot_image(snapshot);
        match self.docker.inspect_image(&name).await {
            Ok(image) => Ok(EngineImage {
                id: image.id.unwrap_or(name),
                workdir: image
                    .config
                    .and_then(|c| c.working_dir)
                    .filter(|w| !w.is_empty()),
            }),
            Err(err) if is_not_found(&err) => {
                Err(RuntimeError::NotFound(format!("snapshot {snapshot}")))
            }
            Err(err) => Err(RuntimeError::HostNotReady(format!(
                "the Docker engine cannot look up snapshot {snapshot}: {err}"
            ))),
        }
    }

    /// Removes a snapshot's image; the engine refuses while a fork's container uses it.
    pub(super) async fn remove_snapshot_image(&self, snapshot: &SnapshotId) -> Result<()> {
        self.negotiate().await?;
        let options = RemoveImageOptions {
            force: false,
            noprune: false,
            ..Default::default()
        };
        match self
            .docker
            .remove_image(&self.snapshot_image(snapshot), Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if is_not_found(&err) => {
                Err(RuntimeError::NotFound(format!("snapshot {snapshot}")))
            }
            Err(err) => Err(RuntimeError::InvalidSpec(format!(
                "snapshot {snapshot} cannot be removed (destroy its forks first): {err}"
            ))),
        }
    }
}

impl DockerRuntime {
    /// The snapshots whose images the engine holds under this runtime's prefix (as
    /// reconcile takes the prefix's containers for its own).
    pub(super) async fn snapshot_images(&self) -> Result<Vec<SnapshotId>> {
        self.negotiate().await?;
        let repo = self.snapshot_repo();
        let filters = HashMap::from([("reference", vec![repo.as_str()])]);
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = self.docker.list_images(Some(options)).await.map_err(|e| {
            RuntimeError::HostNotReady(format!(
                "the Docker engine cannot list the snapshot images: {e}"
            ))
        })?;
        let prefix = format!("{repo}:");
        Ok(images
            .iter()
            .flat_map(|image| &image.repo_tags)
            .filter_map(|tag| tag.strip_prefix(&prefix))
            .filter_map(|tag| SnapshotId::new(tag.to_string()).ok())
            .collect())
    }
}

fn random_hex() -> String {
    let bytes: [u8; 12] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
