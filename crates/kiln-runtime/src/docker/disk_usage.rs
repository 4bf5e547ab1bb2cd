//! A container's disk use: what its writable layer holds (`SizeRw` of an inspect with
//! `size`), the same quantity the engine's `storage_opt size` limits.
//!
//! The engine walks the layer to answer (overlay2 keeps no running count), so a layer of
//! very many files takes a while: the answer is waited for at most [`SIZE_TIMEOUT`], and
//! a sample without it only lacks the disk figure (usage is information, not a gate).

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;

/// How long a usage sample waits for the engine's walk of the writable layer.
const SIZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes in the writable layer of container `name`; `None` when the engine does not say
/// (in time).
pub(super) async fn disk_used(docker: &Docker, name: &str) -> Option<u64> {
    let options = InspectContainerOptions { size: true };
    let inspect = tokio::time::timeout(SIZE_TIMEOUT, docker.inspect_container(name, Some(options)))
        .await
        .ok()?
        .ok()?;
    inspect.size_rw.and_then(|size| u64::try_from(size).ok())
}
