//! The agent's socket directory, read-only once the agent listens (`socket` connection).
//!
//! The directory is bound from the host (`/run/kiln/docker/<prefix>/<id>` at `/.kiln/run`)
//! writable, since the agent must create its socket there; but the sandbox's processes
//! share the agent's uid, so they could then remove the socket and listen in its place.
//! As on the local backend, the server enters the container's mount namespace (the engine
//! runs on this machine whenever the socket connection is used) and remounts the directory
//! read-only before anything but the agent runs inside; without `CAP_SYS_ADMIN` the
//! container cannot undo it. The namespace entered is checked to be the container's: its
//! `/.kiln/run/agent.sock` must be the very socket the server dials.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bollard::Docker;

use super::{engine_err, RUN_DIR, SOCKET_PATH};
use crate::error::{Result, RuntimeError};
use crate::local::mount_namespace::{in_namespace_of, remount_read_only};
use crate::spec::SandboxId;

/// Makes `/.kiln/run` of container `name` read-only; `socket` is the agent's socket as
/// the server sees it.
pub(super) async fn seal_run_dir(
    docker: &Docker,
    id: &SandboxId,
    name: &str,
    socket: PathBuf,
) -> Result<()> {
    let inspect = docker
        .inspect_container(name, None)
        .await
        .map_err(|e| engine_err(id, "cannot inspect the container", &e))?;
    let failed = |reason: String| RuntimeError::StartFailed {
        id: id.to_string(),
        reason,
    };
    let pid = inspect
        .state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| failed("the engine reports no process for the container".into()))?;
    let host =
        std::fs::metadata(&socket).map_err(|e| RuntimeError::io("cannot stat", &socket, e))?;
    let (dev, ino) = (host.dev(), host.ino());
    let sealed = tokio::task::spawn_blocking(move || {
        in_namespace_of(pid, move || {
            let inside = Path::new(SOCKET_PATH);
            let meta = std::fs::metadata(inside)
                .map_err(|e| RuntimeError::io("cannot stat", inside, e))?;
            if (meta.dev(), meta.ino()) != (dev, ino) {
                return Err(RuntimeError::io(
                    "is not the agent's socket:",
                    inside,
                    std::io::Error::other("another process's mount namespace"),
                ));
            }
            remount_read_only(Path::new(RUN_DIR))
        })
    })
    .await
    .map_err(|e| failed(format!("sealing the agent's socket failed: {e}")))?;
    sealed.map_err(|e| {
        failed(format!(
            "cannot make the agent's socket directory read-only (the socket connection needs \
             the engine on this machine and the server as root): {e}"
        ))
    })
}
