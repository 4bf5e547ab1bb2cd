//! Starting one sandbox, step by step. The order is the point of this file.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kiln_protocol::AsyncAgentClient;

use crate::egress_socket;
use crate::error::{Result, RuntimeError};
use crate::local::bwrap::{self, BwrapLaunch, RUN_DIR};
use crate::local::cgroup::favor_dynmods::{self, FavorDynmods};
use crate::local::launch_ns::LaunchNs;
use crate::local::layout::{SandboxDirs, SandboxState};
use crate::local::sandbox::Sandbox;
use crate::local::spec::{LocalSpec, RootLayers};
use crate::local::{
    disk, late_root, mount_namespace, overlay, proc_seal, quota, staging, teardown, workspace,
    DiskLimitMode, LocalRuntime,
};

/// The agent binds its socket, then restricts it to 0600: only then is it ready.
const SOCKET_READY_MODE: u32 = 0o600;

/// What a starting sandbox gets as its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// The overlay of its layers, from the start.
    Layers,
    /// A skeleton, until `late_root::attach` gives it one (a warm sandbox).
    Later,
}

impl LocalRuntime {
    /// Starts `spec`; on failure removes everything it set up.
    pub(crate) async fn start(&self, spec: &LocalSpec) -> Result<Arc<Sandbox>> {
        self.start_with(spec, Root::Layers).await
    }

    /// [`Self::start`], with its root now or [`Root::Later`].
    pub(crate) async fn start_with(&self, spec: &LocalSpec, root: Root) -> Result<Arc<Sandbox>> {
        // 1. Validate before touching the host.
        // (A root given later is checked when it is: `warm.rs`.)
        if root == Root::Layers {
            check_layers(&spec.layers)?;
        }
        for bind in &spec.binds {
            // The target must not climb out of the root nor hide the agent's own mounts.
            let target_ok = bind.target.starts_with('/')
                && !bind.target.split('/').any(|part| part == "..")
                && !bind.target.starts_with("/.kiln")
                && bind.target != "/";
            if !bind.source.is_absolute() || !bind.source.is_dir() || !target_ok {
                return Err(RuntimeError::InvalidSpec(format!(
                    "bind {} -> {} must join an existing absolute host directory to an absolute path",
                    bind.source.display(),
                    bind.target
                )));
            }
        }
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, spec.id.as_str());
        let cgroup = self.cgroups.cgroup_of(spec.id.as_str());
        // 2. The sandbox's directory; its existence is what "exists" means on disk, so
        //    a leftover one (crash) is refused rather than reused.
        if dirs.base.exists() {
            return Err(RuntimeError::AlreadyExists(spec.id.to_string()));
        }
        let result = self.start_in(spec, &dirs, root).await;
        if result.is_err() {
            let cgroups = Arc::clone(&self.cgroups);
            let _ = tokio::task::spawn_blocking(move || {
                teardown::teardown(cgroups.as_ref(), &cgroup, &dirs)
            })
            .await;
        }
        result
    }

    /// Host settings made once, before the first sandbox starts (not in `new`: a command
    /// that opens the runtime without starting sandboxes leaves the host as it is).
    pub(crate) fn tune_host(&self) {
        if !self.config.favor_dynmods {
            return;
        }
        self.host_tuned.call_once(|| match favor_dynmods::enable() {
            FavorDynmods::Changed(at) => tracing::info!(
                mount = %at.display(),
                "set favordynmods on the cgroup2 mount: moving a sandbox into its cgroup no \
                 longer waits for an RCU grace period (runtime.cgroup_favordynmods = false \
                 leaves the host as it is)"
            ),
            FavorDynmods::Refused(at, why) => tracing::warn!(
                mount = %at.display(),
                error = %why,
                "cannot set favordynmods on the cgroup2 mount: each sandbox start may wait \
                 ≈ 6 ms longer"
            ),
            FavorDynmods::Unchanged(_) | FavorDynmods::NoCgroup2 => {}
        });
    }

    async fn start_in(
        &self,
        spec: &LocalSpec,
        dirs: &SandboxDirs,
        root_mode: Root,
    ) -> Result<Arc<Sandbox>> {
        self.tune_host();
        let t0 = Instant::now();
        dirs.create()?;
        // 3. The writable layer on a filesystem of its own, the disk limit's size: a full
        //    disk is the sandbox's ENOSPC, never the host's.
        let disk_bytes = spec
            .limits
            .disk_bytes
            .filter(|_| self.disk_mode != DiskLimitMode::None);
        if let (Some(bytes), DiskLimitMode::ProjectQuota) = (disk_bytes, self.disk_mode) {
            // Or a project of its own on the runtime root's filesystem: `disk/` stays a
            // plain directory, and what is made below it inherits the project.
            quota::assign(&dirs.disk, bytes)?;
            disk::prepare_layer(&dirs.upper, &dirs.work)?;
        } else if let Some(bytes) = disk_bytes {
            let (pool, image, disk) = (
                Arc::clone(&self.disks),
                dirs.image.clone(),
                dirs.disk.clone(),
            );
            tokio::task::spawn_blocking(move || pool.take(bytes, &image, &disk))
                .await
                .map_err(|e| {
                    RuntimeError::io(
                        "disk task failed for",
                        &dirs.image,
                        std::io::Error::other(e),
                    )
                })??;
        } else {
            disk::prepare_layer(&dirs.upper, &dirs.work)?;
        }
        // Workspaces are copied onto the sandbox's own filesystem, never bound from the
        // host: a bind's mountinfo line would show the host path (`workspace.rs`).
        let launch_workspaces = self.launch_workspaces();
        let binds = if spec.binds.is_empty() {
            Vec::new()
        } else {
            let (owned, limits, binds, launch) = (
                dirs.clone(),
                spec.limits,
                spec.binds.clone(),
                launch_workspaces.clone(),
            );
            tokio::task::spawn_blocking(move || {
                workspace::copy_in(&owned, &limits, &binds, &launch)
            })
            .await
            .map_err(|e| {
                RuntimeError::io(
                    "workspace task failed for",
                    &dirs.base,
                    std::io::Error::other(e),
                )
            })??
        };
        let t_disk = t0.elapsed();
        staging::mount_run_dir(&dirs.run)?;
        // Bound before the agent starts, which relays to it; dropped (stopped) if the
        // start fails from here on.
        let egress = spec
            .egress
            .clone()
            .map(|egress| egress_socket::listen(&dirs.run.join(egress_socket::SOCKET_NAME), egress))
            .transpose()?;
        // 4. The root: image layers read-only, changes in our upper dir (named relative to
        //    the sandbox's directory: the options show in the sandbox's mountinfo).
        //    A warm sandbox starts on a skeleton instead (`late_root.rs`).
        let root_dir = match root_mode {
            Root::Layers => {
                overlay::mount_overlay_relative(
                    &dirs.base,
                    spec.layers.dirs(),
                    &dirs.upper,
                    &dirs.work,
                    &dirs.merged,
                )?;
                dirs.merged.clone()
            }
            Root::Later => {
                let skeleton = dirs.skeleton();
                late_root::make_skeleton(&skeleton)?;
                skeleton
            }
        };
        // 5. The cgroup with its limits, before any process exists, so the very first
        //    fork of bwrap is already accounted and limited.
        let t_mount = t0.elapsed();
        let cgroup = self.cgroups.create(spec.id.as_str(), &spec.limits)?;
        let cgroup_procs = cgroup.open_procs()?;
        let t_cg = t0.elapsed();
        // bwrap starts in a mount namespace of its own without the other sandboxes'
        // mounts, where this one's root and socket directory are bound at fixed paths.
        let (root, run) = self.launch_dirs();
        let workspaces = workspace::dir(dirs, spec.limits.disk_bytes.is_some());
        let mut launch_binds = vec![(root_dir.as_path(), root.as_path())];
        launch_binds.push((&dirs.run, &run));
        if !binds.is_empty() {
            launch_binds.push((&workspaces, &launch_workspaces));
        }
        let launch_ns = LaunchNs::new(&launch_binds)?;
        // 6. bubblewrap: namespaces, mounts, capabilities, seccomp; the agent as PID 1.
        let launched = bwrap::launch(BwrapLaunch {
            bwrap: &self.config.bwrap,
            root: &root,
            agent: &self.staged.agent,
            cmdline: &self.staged.cmdline,
            run_dir: &run,
            hostname: &spec.hostname,
            binds: &binds,
            env: &spec.env,
            seccomp_files: &self.seccomp_files,
            cgroup_procs,
            shm_bytes: bwrap::shm_bytes(&spec.limits),
            launch_ns: Some(launch_ns),
            egress: egress.is_some(),
        })
        .await?;
        let t_launch = t0.elapsed();
        let mut sandbox = Sandbox::new(
            spec.clone(),
            dirs.clone(),
            (Arc::clone(&self.cgroups), cgroup),
            launched.init_pid,
            SystemTime::now(),
        );
        sandbox.stderr_tail = Some(Arc::clone(&launched.stderr_tail));
        sandbox.egress = egress_socket::EgressSlot::new(egress);
        let mut child = launched.child;
        // 7. Wait for the agent's socket (bound and restricted).
        let socket = dirs.socket();
        let deadline = Instant::now() + self.config.start_timeout;
        let mut pause = Duration::from_micros(250);
        loop {
            if let Ok(meta) = std::fs::symlink_metadata(&socket) {
                if meta.file_type().is_socket() && meta.mode() & 0o777 == SOCKET_READY_MODE {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.start_failed(
                    spec,
                    &launched.stderr_tail,
                    format!("exited with {status}"),
                ));
            }
            if Instant::now() > deadline {
                return Err(self.start_failed(
                    spec,
                    &launched.stderr_tail,
                    format!("no agent socket within {:?}", self.config.start_timeout),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        let t_sock = t0.elapsed();
        // 8. Seal, from the host in the sandbox's mount namespace, before anything but
        //    the agent runs inside: the socket directory (the sandbox's processes share
        //    the agent's uid and could replace the socket), and the host-wide kernel
        //    state in /proc (they are uid 0, which is all much of it asks for).
        mount_namespace::in_namespace_of(launched.init_pid, || {
            mount_namespace::remount_read_only(Path::new(RUN_DIR))?;
            proc_seal::seal_proc(Path::new("/proc"))
        })?;
        let t_seal = t0.elapsed();
        // 9. Ready means the agent answers its hello.
        let client = AsyncAgentClient::unix(socket);
        let conn = client.connect().await.map_err(|e| {
            self.start_failed(
                spec,
                &launched.stderr_tail,
                format!("agent hello failed: {e}"),
            )
        })?;
        sandbox.agent_version = conn.agent_version().to_string();
        drop(conn);
        sandbox.client = client;
        tracing::debug!(
            sandbox = %spec.id,
            disk = ?t_disk,
            mounted = ?t_mount,
            cgroup = ?t_cg,
            launched = ?t_launch,
            socket = ?t_sock,
            sealed = ?t_seal,
            ready = ?t0.elapsed(),
            "sandbox started"
        );
        // 10. Remember it on disk for a restarted server.
        dirs.write_state(&SandboxState::new(
            spec,
            launched.init_pid,
            sandbox.created_at,
        ))?;
        sandbox.monitor = tokio::sync::Mutex::new(Some(child));
        Ok(Arc::new(sandbox))
    }

    fn start_failed(
        &self,
        spec: &LocalSpec,
        tail: &Arc<std::sync::Mutex<Vec<u8>>>,
        reason: String,
    ) -> RuntimeError {
        let stderr = bwrap::tail_text(tail);
        RuntimeError::StartFailed {
            id: spec.id.to_string(),
            reason: if stderr.is_empty() {
                reason
            } else {
                format!("{reason}; stderr: {stderr}")
            },
        }
    }
}

/// The layers must make a valid absolute `lowerdir=` (though they are mounted with short
/// relative names) and exist.
pub(crate) fn check_layers(layers: &RootLayers) -> Result<()> {
    layers.lowerdir_option()?;
    for layer in layers.dirs() {
        if !layer.is_dir() {
            return Err(RuntimeError::InvalidSpec(format!(
                "layer {} is not a directory",
                layer.display()
            )));
        }
    }
    Ok(())
}
