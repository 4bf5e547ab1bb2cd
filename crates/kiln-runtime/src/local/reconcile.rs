//! Start-up reconciliation: whatever the runtime root holds that the caller does not
//! know is torn down; known sandboxes still alive are adopted.

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::local::layout::SandboxDirs;
use crate::local::sandbox::Sandbox;
use crate::local::{loopdev, overlay, LocalRuntime};
use crate::runtime::ReconcileReport;
use crate::spec::SandboxId;

/// How long an adopted sandbox's agent has to answer a ping.
const ADOPT_PING_TIMEOUT: Duration = Duration::from_secs(2);

impl LocalRuntime {
    pub(crate) async fn reconcile_with(&self, known: &[SandboxId]) -> Result<ReconcileReport> {
        let known: BTreeSet<&SandboxId> = known.iter().collect();
        let mut report = ReconcileReport::default();

        // Everything with a trace on the host: directories, cgroups, mounts.
        let sandboxes_dir = self.sandboxes_dir();
        let mut found: BTreeSet<String> = fs::read_dir(&sandboxes_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        // The cgroups a sandbox taken warm kept (its state names them) are its own.
        let kept: BTreeSet<String> = found
            .iter()
            .filter_map(|name| {
                let dirs = SandboxDirs::new(&sandboxes_dir, &self.socket_root, name);
                dirs.read_state()?.cgroup
            })
            .collect();
        found.extend(
            self.cgroups
                .existing()
                .into_iter()
                .filter(|name| !kept.contains(name)),
        );
        for mount in overlay::mounts_under(&sandboxes_dir) {
            if let Ok(rest) = mount.strip_prefix(&sandboxes_dir) {
                if let Some(first) = rest.components().next() {
                    found.insert(first.as_os_str().to_string_lossy().into_owned());
                }
            }
        }

        for name in found {
            let id = SandboxId::new(name.clone()).ok();
            let keep = id.as_ref().is_some_and(|id| known.contains(id));
            if id.as_ref().is_some_and(|id| self.slots.is_starting(id)) || self.warm.holds(&name) {
                continue;
            }
            let in_table = id.as_ref().and_then(|id| self.slots.running(id));
            match (keep, in_table) {
                (true, Some(_)) => continue,
                (false, Some(sandbox)) => {
                    if let Some(id) = &id {
                        self.slots.remove(id);
                    }
                    self.destroy_sandbox(sandbox).await?;
                    report.removed.push(name);
                }
                (true, None) => {
                    let Some(id) = id else { continue };
                    if self.adopt(&id).await {
                        report.adopted.push(id);
                    } else {
                        self.teardown_leftovers(&name).await?;
                        report.lost.push(id);
                    }
                }
                (false, None) => {
                    self.teardown_leftovers(&name).await?;
                    report.removed.push(name);
                }
            }
        }
        // Loop devices of disks whose mount is gone but whose device was not freed
        // (autoclear frees them with their last user; this covers anything else).
        for (device, backing) in loopdev::attached_under(&sandboxes_dir) {
            let owner = backing
                .strip_prefix(&sandboxes_dir)
                .ok()
                .and_then(|rest| rest.components().next())
                .and_then(|c| SandboxId::new(c.as_os_str().to_string_lossy()).ok());
            if owner.is_some_and(|id| self.slots.contains(&id)) {
                continue;
            }
            if let Err(e) = loopdev::detach(&device) {
                tracing::warn!(device = %device.display(), error = %e, "cannot detach a leftover loop device");
            }
        }
        for id in known {
            let accounted = self.slots.running(id).is_some() || report.lost.contains(id);
            if !accounted {
                report.lost.push(id.clone());
            }
        }
        Ok(report)
    }

    /// Takes over a sandbox a previous server process started, if it still answers.
    async fn adopt(&self, id: &SandboxId) -> bool {
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, id.as_str());
        let Some(state) = dirs.read_state() else {
            return false;
        };
        let cgroup = self.cgroups.cgroup_of(state.cgroup_name(id.as_str()));
        if !cgroup
            .pids()
            .contains(&i32::try_from(state.init_pid).unwrap_or(-1))
        {
            return false;
        }
        let spec = state.spec(id.clone());
        let limits = spec.limits;
        let sandbox = Sandbox::new(
            spec,
            dirs,
            (Arc::clone(&self.cgroups), cgroup),
            state.init_pid,
            state.created_at(),
        );
        let client = sandbox
            .client
            .clone()
            .with_request_timeout(ADOPT_PING_TIMEOUT);
        if client.ping().await.is_err() {
            return false;
        }
        self.admission.adopt(id, &limits);
        self.slots.insert(id, Arc::new(sandbox));
        true
    }
}
