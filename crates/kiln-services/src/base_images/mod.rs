//! Base images: families (`python`) of numbered versions, each an image in the server's
//! image store under `base/<family>:<version>`. A version is prepared in the background
//! (pulled, imported from a file under `[base_images] import_dir`, or copied from an image
//! already in the store: [`pipeline`]), then promoted to be its family's current version;
//! a rollback makes the previous promoted version current again. Reading is for everyone
//! signed in; changing is for admins.
//!
//! The store row is the truth of a version's status; every transition is conditional
//! there, so an abort racing the end of a preparation leaves the version aborted and the
//! preparation removes the image it made.
mod pipeline;
mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use kiln_config::BaseImagesConfig;
use kiln_image::{ImageError, ImageStore};
use kiln_store::{
    BaseImageInsert, BaseImageLimits, BaseImageRecord, BaseImageStatus, NewBaseImage, Store,
    StoreError, User,
};
use tokio::sync::Notify;

use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::sandboxes::{Sandboxes, WorkOwner};

pub use source::{check_family, BaseImageSource, MAX_FAMILY_BYTES};

/// Base image families, their versions and the pipeline that prepares them.
/// A page of base image versions.
#[derive(Debug, Clone)]
pub struct BaseImagePage {
    pub base_images: Vec<BaseImageRecord>,
    /// Where the next page starts (`cursor`); `None` on the last page.
    pub next_cursor: Option<String>,
}

pub struct BaseImageService {
    store: Arc<dyn Store>,
    config: BaseImagesConfig,
    /// The server's image store, or why it cannot be opened.
    images: Result<ImageStore, String>,
    /// Preparations running on this server, by version: notified to stop.
    running: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Which node this is: a restart fails only its own preparations.
    sandboxes: Arc<Sandboxes>,
}

impl BaseImageService {
    pub fn new(
        store: Arc<dyn Store>,
        config: BaseImagesConfig,
        images: Result<ImageStore, String>,
        sandboxes: Arc<Sandboxes>,
    ) -> Self {
        Self {
            store,
            config,
            images,
            running: Arc::default(),
            sandboxes,
        }
    }

    pub fn config(&self) -> &BaseImagesConfig {
        &self.config
    }

    fn images(&self) -> ServiceResult<&ImageStore> {
        self.images.as_ref().map_err(|why| {
            ServiceError::Unavailable(format!("the image store cannot be used: {why}"))
        })
    }

    /// A page of every version of every family, by family, newest version first: at most
    /// `limit`, after the page `cursor` (a `next_cursor`) ended.
    pub async fn list(&self, limit: u64, cursor: Option<&str>) -> ServiceResult<BaseImagePage> {
        let after = cursor.map(crate::cursor::decode).transpose()?;
        let after = match &after {
            // Versions start at 1: a cursor with another number was not given out here.
            Some((version, family)) => Some((
                family.as_str(),
                u64::try_from(*version)
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(crate::cursor::bad)?,
            )),
            None => None,
        };
        let mut base_images = self
            .store
            .page_base_images(after, limit.saturating_add(1))
            .await?;
        let has_more = base_images.len() as u64 > limit;
        base_images.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = match base_images.last() {
            Some(last) if has_more => Some(crate::cursor::encode(
                i64::try_from(last.version).unwrap_or(i64::MAX),
                &last.family,
            )),
            _ => None,
        };
        Ok(BaseImagePage {
            base_images,
            next_cursor,
        })
    }

    pub async fn get(&self, image_id: &str) -> ServiceResult<BaseImageRecord> {
        self.store
            .get_base_image(image_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("base image {image_id}")))
    }

    /// The family's current version.
    pub async fn current(&self, family: &str) -> ServiceResult<BaseImageRecord> {
        self.store.current_base_image(family).await?.ok_or_else(|| {
            ServiceError::not_found(format!(
                "base image family {family} (no version of it is promoted)"
            ))
        })
    }

    /// The current version of the family `[base_images] default_family` names.
    pub async fn default_image(&self) -> ServiceResult<BaseImageRecord> {
        match &self.config.default_family {
            Some(family) => self.current(family).await,
            None => Err(ServiceError::not_found(
                "default base image (this server sets no base_images.default_family)",
            )),
        }
    }

    /// The family's versions, newest first; a family without any is "not found".
    pub async fn versions(&self, family: &str) -> ServiceResult<Vec<BaseImageRecord>> {
        let versions = self.store.list_base_images(Some(family)).await?;
        if versions.is_empty() {
            return Err(ServiceError::not_found(format!(
                "base image family {family}"
            )));
        }
        Ok(versions)
    }

    /// The image store reference of the family's current version (what an instance made
    /// from the family runs on).
    pub async fn current_reference(&self, family: &str) -> ServiceResult<String> {
        Ok(self.current(family).await?.reference())
    }

    /// Records a new version of `family` in `preparing` and prepares it in the background.
    pub async fn prepare(
        &self,
        actor: &User,
        family: &str,
        source: BaseImageSource,
    ) -> ServiceResult<BaseImageRecord> {
        require_admin(actor)?;
        check_family(family)?;
        let images = self.images()?.clone();
        let work = source.resolve(&self.config, &images)?;
        let new = NewBaseImage {
            image_id: new_id("bim"),
            family: family.to_string(),
            source: source.describe(),
            created_by: actor.user_id.clone(),
            created_at: Utc::now(),
            node_id: (!self.sandboxes.is_ephemeral())
                .then(|| self.sandboxes.node_id().map(str::to_string))
                .flatten(),
        };
        let limits = BaseImageLimits {
            max_versions_per_family: u64::from(self.config.max_versions_per_family),
            max_preparing: u64::from(self.config.max_preparing),
        };
        let record = match self.store.insert_base_image(&new, limits).await {
            Ok(BaseImageInsert::Inserted(record)) => *record,
            Ok(BaseImageInsert::TooManyVersions) => {
                return Err(ServiceError::Conflict(format!(
                    "family {family} has {} versions, the most this server keeps \
                     (base_images.max_versions_per_family): delete old ones first",
                    limits.max_versions_per_family
                )))
            }
            Ok(BaseImageInsert::TooManyPreparing) => {
                return Err(ServiceError::LimitExceeded(format!(
                    "{} base images are being prepared already \
                     (base_images.max_preparing): wait for one to end",
                    limits.max_preparing
                )))
            }
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "another version of family {family} was being recorded at the same \
                     time: try again"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let stop = Arc::new(Notify::new());
        self.lock_running()
            .insert(record.image_id.clone(), stop.clone());
        let job = pipeline::Job {
            store: self.store.clone(),
            images,
            image_id: record.image_id.clone(),
            target: record.reference(),
            work,
            stop,
            running: self.running.clone(),
        };
        tokio::spawn(job.run());
        Ok(record)
    }

    /// Makes a prepared version its family's current one.
    pub async fn promote(&self, actor: &User, image_id: &str) -> ServiceResult<BaseImageRecord> {
        require_admin(actor)?;
        let record = self.get(image_id).await?;
        if let Some(done) = self.store.promote_base_image(image_id, Utc::now()).await? {
            return Ok(done);
        }
        Err(wrong_status(&record, "promoted", "prepared"))
    }

    /// Stops a version being prepared, or discards a prepared one; its image is removed.
    pub async fn abort(&self, actor: &User, image_id: &str) -> ServiceResult<BaseImageRecord> {
        require_admin(actor)?;
        let record = self.get(image_id).await?;
        let Some(aborted) = self.store.abort_base_image(image_id, Utc::now()).await? else {
            return Err(wrong_status(&record, "aborted", "preparing or prepared"));
        };
        let images = self.images()?.clone();
        let reference = aborted.reference();
        let running = self.lock_running().get(image_id).cloned();
        match running {
            None => {
                if let Err(e) = pipeline::remove_image(images, reference.clone()).await {
                    tracing::warn!(image = %reference, error = %e,
                        "cannot remove the image of an aborted base image");
                }
            }
            Some(stop) => {
                // The preparation stops (mid-copy) and removes what it made. Here too,
                // in the background, for one that had just recorded `prepared`: the store's
                // removal waits for an import in progress to commit, so nothing slips in
                // after it, and the caller does not wait for a long import.
                stop.notify_one();
                tokio::spawn(async move {
                    if let Err(e) = pipeline::remove_image(images, reference.clone()).await {
                        tracing::warn!(image = %reference, error = %e,
                            "cannot remove the image of an aborted base image");
                    }
                });
            }
        }
        Ok(aborted)
    }

    /// Makes the promoted version before the current one current again.
    pub async fn rollback(&self, actor: &User, family: &str) -> ServiceResult<BaseImageRecord> {
        require_admin(actor)?;
        self.versions(family).await?;
        self.store
            .rollback_base_image_family(family)
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(format!(
                    "family {family} has no promoted version before its current one"
                ))
            })
    }

    /// Deletes a version and its image: not the current one of its family, not one being
    /// prepared, and not one whose layers live instances run on.
    pub async fn delete(&self, actor: &User, image_id: &str) -> ServiceResult<()> {
        require_admin(actor)?;
        let record = self.get(image_id).await?;
        if record.current {
            return Err(ServiceError::Conflict(format!(
                "base image {image_id} is the current version of family {}: promote \
                 another version or roll back first",
                record.family
            )));
        }
        if record.status == BaseImageStatus::Preparing {
            return Err(ServiceError::Conflict(format!(
                "base image {image_id} is being prepared: abort it first"
            )));
        }
        let images = self.images()?.clone();
        match pipeline::remove_image(images, record.reference()).await {
            Ok(()) => {}
            Err(ImageError::InUse { users, .. }) => {
                return Err(ServiceError::Conflict(format!(
                    "base image {image_id} is in use by running instances ({}): \
                     delete it when they have ended",
                    users.join(", ")
                )))
            }
            Err(e) => return Err(ServiceError::Internal(e.to_string())),
        }
        if !self.store.delete_base_image(image_id).await? {
            return Err(ServiceError::Conflict(format!(
                "base image {image_id} changed while it was being deleted: try again"
            )));
        }
        Ok(())
    }

    /// Versions this node (or a node the registry has down) left `preparing` can never
    /// end: they fail, and whatever image they made is removed. A live node's go on.
    pub async fn recover(&self) -> ServiceResult<u64> {
        let mut failed = 0;
        for record in self.store.list_base_images(None).await? {
            if record.status == BaseImageStatus::Preparing
                && !self.lock_running().contains_key(&record.image_id)
            {
                let owner = self
                    .sandboxes
                    .owner_of_work(self.store.as_ref(), record.node_id.as_deref())
                    .await?;
                let error = match owner {
                    WorkOwner::Mine => "interrupted by a restart of the server".to_string(),
                    WorkOwner::Lost(node) => {
                        format!("the node that prepared it ({node}) was lost")
                    }
                    WorkOwner::Live => continue,
                };
                let outcome = kiln_store::BaseImageOutcome::Failed { error };
                if self
                    .store
                    .finish_base_image(&record.image_id, &outcome, Utc::now())
                    .await?
                    .is_some()
                {
                    failed += 1;
                    // An import may have committed its image before the stop.
                    if let Ok(images) = self.images() {
                        let reference = record.reference();
                        if let Err(e) = pipeline::remove_image(images.clone(), reference).await {
                            tracing::warn!(image_id = record.image_id, error = %e,
                                "cannot remove the image of a cut-off base image");
                        }
                    }
                }
            }
        }
        Ok(failed)
    }

    /// How many preparations run on this server now (they end on their own, or at an
    /// abort, mid-copy).
    pub fn preparing_here(&self) -> usize {
        self.lock_running().len()
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        pipeline::lock(&self.running)
    }
}

fn require_admin(actor: &User) -> ServiceResult<()> {
    if actor.is_admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden(
            "only an admin may change base images".into(),
        ))
    }
}

fn wrong_status(record: &BaseImageRecord, to: &str, from: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "base image {} is {}: only a version that is {from} can be {to}",
        record.image_id,
        record.status.as_str()
    ))
}
