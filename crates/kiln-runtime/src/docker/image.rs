//! Which engine image a sandbox's reference names: an image of Kiln's store (loaded into
//! the engine on first use, as a `docker save` tarball: its engine id is then the
//! config's digest, so a store image is found again by content, whatever its name), else
//! an image the engine already has under that name (e.g. SWE-bench's own
//! `swebench/sweb.eval.x86_64.<id>:latest`).

use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::{is_not_found, DockerRuntime};
use crate::error::{Result, RuntimeError};

/// Chunks an image archive is sent to the engine in.
const CHUNK: usize = 1 << 20;

/// An engine image, ready for a container.
#[derive(Debug, Clone)]
pub(super) struct EngineImage {
    /// The engine's id (`sha256:…`).
    pub id: String,
    /// The image's `WorkingDir`, when it sets one.
    pub workdir: Option<String>,
}

impl DockerRuntime {
    /// Whether a create could find `reference`, without loading anything.
    pub(super) async fn find_image(&self, reference: &str) -> Result<()> {
        if self.store_image(reference).is_some() {
            return Ok(());
        }
        self.engine_image(reference).await.map(|_| ())
    }

    /// The engine image for `reference`, loaded from the store when the engine lacks it.
    pub(super) async fn image(&self, reference: &str) -> Result<EngineImage> {
        let Some(stored) = self.store_image(reference) else {
            return self.engine_image(reference).await;
        };
        let id = stored.config_digest().to_string();
        if let Ok(found) = self.engine_image(&id).await {
            return Ok(found);
        }
        let _one_at_a_time = self.loading.lock().await;
        if let Ok(found) = self.engine_image(&id).await {
            return Ok(found);
        }
        self.load(reference).await?;
        self.engine_image(&id)
            .await
            .map_err(|_| RuntimeError::ImageNotFound {
                reference: reference.into(),
                reason: format!("the engine did not keep image {id} after loading it"),
            })
    }

    fn store_image(&self, reference: &str) -> Option<kiln_image::Image> {
        self.images.as_ref()?.get(reference).ok()
    }

    async fn engine_image(&self, name: &str) -> Result<EngineImage> {
        match self.docker.inspect_image(name).await {
            Ok(image) => Ok(EngineImage {
                id: image.id.unwrap_or_else(|| name.to_string()),
                workdir: image
                    .config
                    .and_then(|c| c.working_dir)
                    .filter(|w| !w.is_empty()),
            }),
            Err(err) if is_not_found(&err) => Err(RuntimeError::ImageNotFound {
                reference: name.into(),
                reason: "neither Kiln's image store nor the Docker engine has it \
                         (docker pull it, or kiln images import it)"
                    .into(),
            }),
            Err(err) => Err(RuntimeError::HostNotReady(format!(
                "the Docker engine cannot look up image {name}: {err}"
            ))),
        }
    }

    /// Writes the store image as a `docker save` tarball and streams it into the engine.
    async fn load(&self, reference: &str) -> Result<()> {
        let Some(images) = self.images.clone() else {
            return Err(RuntimeError::ImageNotFound {
                reference: reference.into(),
                reason: "no image store".into(),
            });
        };
        let archive = tempfile_in(&self.settings.root)?;
        let path = archive.path().to_path_buf();
        let (reference_owned, tag) = (reference.to_string(), engine_tag(reference));
        let file = archive
            .reopen()
            .map_err(|e| RuntimeError::io("cannot reopen", &path, e))?;
        tokio::task::spawn_blocking(move || {
            images.write_docker_archive(
                &reference_owned,
                tag.as_deref(),
                std::io::BufWriter::new(file),
            )
        })
        .await
        .map_err(|e| RuntimeError::io("archive task failed for", &path, std::io::Error::other(e)))?
        .map_err(|e| RuntimeError::ImageNotFound {
            reference: reference.into(),
            reason: format!("cannot export it from the image store: {e}"),
        })?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| RuntimeError::io("cannot open", &path, e))?;
        let body = futures_util::stream::unfold(file, |mut file| async move {
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<Bytes, std::io::Error>(Bytes::from(buf)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        });
        let mut progress =
            self.docker
                .import_image_stream(ImportImageOptions::default(), body, None);
        while let Some(step) = progress.next().await {
            step.map_err(|e| RuntimeError::ImageNotFound {
                reference: reference.into(),
                reason: format!("the Docker engine refused to load it: {e}"),
            })?;
        }
        Ok(())
    }
}

fn tempfile_in(dir: &std::path::Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("image-")
        .suffix(".tar")
        .tempfile_in(dir)
        .map_err(|e| RuntimeError::io("cannot create a temporary file in", dir, e))
}

/// The name a store image is tagged with in the engine, for people (`docker images`):
/// the reference itself when Docker accepts it, else none (the id is what counts).
fn engine_tag(reference: &str) -> Option<String> {
    let (name, tag) = reference.rsplit_once(':')?;
    let name_ok = !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-' | b'/')
        })
        && !name.starts_with(['.', '_', '-', '/'])
        && !name.contains("//");
    let tag_ok = (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !tag.starts_with(['.', '-']);
    (name_ok && tag_ok).then(|| reference.to_string())
}

#[cfg(test)]
mod tests {
    use super::engine_tag;

    #[test]
    fn only_names_docker_accepts_become_tags() {
        assert_eq!(
            engine_tag("kiln-demo/sample/kiln-demo__inifile-1:1").as_deref(),
            Some("kiln-demo/sample/kiln-demo__inifile-1:1")
        );
        for bad in ["NoTag", "Upper/Case:1", "x:", ":1", "a//b:1", "a:b:c/d"] {
            assert_eq!(engine_tag(bad), None, "{bad}");
        }
    }
}
