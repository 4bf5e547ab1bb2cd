//! Acting inside a running sandbox's mount namespace from the host.

use std::fs::File;
use std::path::PathBuf;

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Result, RuntimeError};

/// Remounts the bind mount at `path` (a path inside the sandbox) read-only, in the mount
/// namespace of process `pid`.
///
/// This is how the agent's socket directory is sealed once the agent has bound its socket:
/// the sandbox's own processes run with the agent's uid and could otherwise unlink the
/// socket and bind an impostor in its place.
///
/// `setns` into a mount namespace is refused to a thread sharing its filesystem context
/// with others (every thread of a normal process), so a short-lived thread first takes a
/// private copy with `unshare(CLONE_FS)`; the rest of the process is unaffected.
pub fn remount_read_only(pid: u32, path: &'static str) -> Result<()> {
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = File::open(&ns_path).map_err(|e| RuntimeError::io("cannot open", &ns_path, e))?;
    let worker = std::thread::Builder::new()
        .name("kiln-setns".into())
        .spawn(move || -> Result<()> {
            let fail = |what: &'static str| {
                move |source| RuntimeError::Mount {
                    what,
                    path: PathBuf::from(path),
                    source,
                }
            };
            unshare(CloneFlags::CLONE_FS).map_err(fail("cannot unshare the fs context for"))?;
            setns(&ns, CloneFlags::CLONE_NEWNS).map_err(fail("cannot enter the namespace of"))?;
            mount(
                None::<&str>,
                path,
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .map_err(fail("cannot remount read-only"))
        })
        .map_err(|e| RuntimeError::io("cannot start a thread for", path, e))?;
    worker.join().map_err(|_| RuntimeError::Mount {
        what: "thread panicked remounting",
        path: PathBuf::from(path),
        source: nix::Error::EIO,
    })?
}
