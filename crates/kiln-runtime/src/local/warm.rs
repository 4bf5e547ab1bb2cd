//! Warm sandboxes (`LocalConfig::warm_pools`): per image, up to N sandboxes started ahead
//! with what a create of that image asks for (environment, working directory, hostname,
//! limits) but no root yet, taken by a create or a fork of that class, and refilled in the
//! background. A burst of creates or forks then costs a root each (an overlay mount and a
//! `pivot_root` inside: `late_root.rs`) instead of a sandbox start each (a disk, cgroup,
//! bubblewrap, the agent's start), which is what a 2-core host spends its time on
//! (`bench/concurrency`, `bench/instances`).
//!
//! A taken sandbox's directory is renamed to its new id; its processes stay in the cgroup
//! they were started in, whose name its state file records (cgroup v2 cannot rename
//! one, and moving the processes would put them outside their cgroup namespace). Unclaimed
//! warm sandboxes live only as long as this runtime: a restarted server tears them
//! down as unknown, like the Kubernetes backend's warm Pods (`kubernetes/warm.rs`).
//! A create with host binds or an egress never takes one.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_protocol::AsyncAgentClient;

use crate::error::{Result, RuntimeError};
use crate::local::admission::{Admission, Budget};
use crate::local::layout::{SandboxDirs, SandboxState};
use crate::local::sandbox::Sandbox;
use crate::local::spec::{LocalSpec, RootLayers};
use crate::local::start::{check_layers, Root};
use crate::local::{late_root, overlay, LocalRuntime};
use crate::slots::Slots;
use crate::spec::{Limits, SandboxId};

/// How long no create must have taken a warm sandbox before the pool is refilled.
const QUIET: Duration = Duration::from_millis(50);

/// What a warm sandbox was started with, which a create must ask for to take it. Not
/// its layers: it gets its root when taken (`late_root.rs`), so a fork of a sandbox of
/// this class takes one as well as a create of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarmClass {
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    hostname: String,
    limits: Limits,
}

impl WarmClass {
    /// `None` for a spec no warm sandbox can serve (host binds, an egress).
    fn of(spec: &LocalSpec) -> Option<Self> {
        (spec.binds.is_empty() && spec.egress.is_none()).then(|| WarmClass {
            env: spec.env.clone(),
            workdir: spec.workdir.clone(),
            hostname: spec.hostname.clone(),
            limits: spec.limits,
        })
    }
}

/// The warm sandboxes of one runtime.
#[derive(Debug, Default)]
pub(crate) struct WarmPools {
    /// Ready ones, by class (few classes: a linear search).
    ready: Mutex<Vec<(WarmClass, Vec<Sandbox>)>>,
    /// The size of each class's pool, from the first create that asked for one.
    sizes: Mutex<Vec<(WarmClass, usize)>>,
    /// The classes a filler task is refilling now (one per class).
    filling: Mutex<Vec<WarmClass>>,
    /// When a create last took one: a filler waits for a quiet moment, so that a burst
    /// of creates does not pay for its own refill.
    last_take: Mutex<Option<Instant>>,
    /// Set at shutdown: fillers stop, and what they were starting is torn down.
    closed: AtomicBool,
    /// The directory (and cgroup) names of warm sandboxes ready or starting: reconcile
    /// leaves them alone.
    names: Mutex<HashSet<String>>,
    /// What this runtime's warm names start with; see [`WarmPools::next_name`].
    prefix: OnceLock<String>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WarmPools {
    /// A name no warm sandbox had before, even one taken before a restart: a taken one
    /// keeps its cgroup's warm name, and a new one of the same name would share (and at
    /// its end, kill) that cgroup. The process id alone is not enough: a server restarted
    /// in the same process (the tests), or given a reused pid, counts from 0 again. So
    /// the names also carry when this runtime first made one.
    fn next_name(&self) -> String {
        let prefix = self.prefix.get_or_init(|| {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("warm-{}-{millis:x}", std::process::id())
        });
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{n}")
    }

    /// Whether `name` is a warm sandbox of this runtime, ready or starting.
    pub(crate) fn holds(&self, name: &str) -> bool {
        lock(&self.names).contains(name)
    }

    /// The pool size of `class`: `size` when given (and then remembered), else what an
    /// earlier create gave; `None` when no pool was ever asked for.
    fn size_of(&self, class: &WarmClass, size: Option<usize>) -> Option<usize> {
        let mut sizes = lock(&self.sizes);
        let known = sizes.iter_mut().find(|(c, _)| c == class);
        match (known, size) {
            (Some((_, known)), Some(size)) => {
                *known = size;
                Some(size)
            }
            (Some((_, known)), None) => Some(*known),
            (None, Some(size)) => {
                sizes.push((class.clone(), size));
                Some(size)
            }
            (None, None) => None,
        }
    }

    fn ready_of(&self, class: &WarmClass) -> usize {
        lock(&self.ready)
            .iter()
            .find(|(c, _)| c == class)
            .map_or(0, |(_, pool)| pool.len())
    }

    /// A live warm sandbox of `class`, out of the pool; dead ones are dropped (and
    /// returned for teardown) on the way.
    fn take(&self, class: &WarmClass) -> (Option<Sandbox>, Vec<Sandbox>) {
        *lock(&self.last_take) = Some(Instant::now());
        let mut dead = Vec::new();
        let mut ready = lock(&self.ready);
        let Some((_, pool)) = ready.iter_mut().find(|(c, _)| c == class) else {
            return (None, dead);
        };
        while let Some(sandbox) = pool.pop() {
            if sandbox.exit.receiver().borrow().is_none() {
                return (Some(sandbox), dead);
            }
            dead.push(sandbox);
        }
        (None, dead)
    }

    /// Marks a filler of `class` running; `false` if one already is (it will see the
    /// new deficit).
    fn begin_fill(&self, class: &WarmClass) -> bool {
        let mut filling = lock(&self.filling);
        if filling.contains(class) {
            return false;
        }
        filling.push(class.clone());
        true
    }

    /// Whether the filler of `class` should start another (the pool is short of `size`
    /// and it has not failed); when not, it is marked stopped under the same lock that
    /// `begin_fill` takes, so no deficit is left without a filler.
    fn go_on_filling(&self, class: &WarmClass, size: usize, failed: bool) -> bool {
        let mut filling = lock(&self.filling);
        if !failed && !self.closed.load(Ordering::SeqCst) && self.ready_of(class) < size {
            return true;
        }
        filling.retain(|c| c != class);
        false
    }

    /// How long to wait before the next start, for creates to stop taking ones.
    fn quiet_wait(&self) -> Option<Duration> {
        let last = (*lock(&self.last_take))?;
        QUIET.checked_sub(last.elapsed())
    }

    /// Adds a started one to the pool; hands it back once the pools are closed.
    fn put(&self, class: &WarmClass, sandbox: Sandbox) -> Option<Sandbox> {
        let mut ready = lock(&self.ready);
        if self.closed.load(Ordering::SeqCst) {
            return Some(sandbox);
        }
        match ready.iter_mut().find(|(c, _)| c == class) {
            Some((_, pool)) => pool.push(sandbox),
            None => ready.push((class.clone(), vec![sandbox])),
        }
        None
    }

    /// Every ready warm sandbox, out of the pools, which take no more (shutdown).
    pub(crate) fn drain(&self) -> Vec<Sandbox> {
        let mut ready = lock(&self.ready);
        self.closed.store(true, Ordering::SeqCst);
        ready.drain(..).flat_map(|(_, pool)| pool).collect()
    }
}

impl LocalRuntime {
    /// A warm sandbox of `spec`'s class made `spec.id`'s with `spec`'s root, when the
    /// pool (of `size`, or of the size an earlier create gave this class) has one; the
    /// pool is refilled either way. `None`: start one the usual way.
    pub(crate) async fn take_warm(&self, spec: &LocalSpec, size: Option<usize>) -> Option<Sandbox> {
        let class = WarmClass::of(spec)?;
        let size = self.warm.size_of(&class, size)?;
        // A spec the usual start refuses is refused there, with its reason.
        check_layers(&spec.layers).ok()?;
        let (taken, dead) = self.warm.take(&class);
        for sandbox in dead {
            self.discard_warm(sandbox).await;
        }
        self.fill_warm(spec, &class, size);
        let warm = taken?;
        let name = warm.spec.id.to_string();
        match self.claim(warm, spec).await {
            Ok(sandbox) => {
                lock(&self.warm.names).remove(&name);
                Some(sandbox)
            }
            Err((err, warm)) => {
                tracing::warn!(sandbox = %spec.id, warm = name, error = %err,
                    "cannot take a warm sandbox; starting one");
                self.discard_warm(*warm).await;
                None
            }
        }
    }

    /// Gives the warm sandbox `spec`'s root, records its cgroup in its state, then renames
    /// its directory to `spec.id`'s (in that order: a crash before the rename leaves a warm
    /// sandbox that a restart removes, and one after it a state that names the right
    /// cgroup); on failure it is handed back for teardown.
    async fn claim(
        &self,
        warm: Sandbox,
        spec: &LocalSpec,
    ) -> std::result::Result<Sandbox, (RuntimeError, Box<Sandbox>)> {
        let dirs = SandboxDirs::new(&self.sandboxes_dir(), &self.socket_root, spec.id.as_str());
        if dirs.base.exists() {
            return Err((
                RuntimeError::AlreadyExists(spec.id.to_string()),
                Box::new(warm),
            ));
        }
        let (warm_dirs, layers, init_pid) = (warm.dirs.clone(), spec.layers.clone(), warm.init_pid);
        let rooted = tokio::task::spawn_blocking(move || {
            overlay::mount_overlay_relative(
                &warm_dirs.base,
                layers.dirs(),
                &warm_dirs.upper,
                &warm_dirs.work,
                &warm_dirs.merged,
            )?;
            late_root::attach(&warm_dirs.merged, init_pid)
        })
        .await
        .unwrap_or_else(|e| {
            Err(RuntimeError::io(
                "root task failed for",
                &dirs.base,
                std::io::Error::other(e),
            ))
        });
        if let Err(err) = rooted {
            return Err((err, Box::new(warm)));
        }
        let created_at = SystemTime::now();
        let state = SandboxState {
            cgroup: Some(warm.spec.id.to_string()),
            ..SandboxState::new(spec, warm.init_pid, created_at)
        };
        if let Err(err) = warm.dirs.write_state(&state) {
            return Err((err, Box::new(warm)));
        }
        if let Err(e) = fs::rename(&warm.dirs.base, &dirs.base) {
            let err = RuntimeError::io("cannot rename", &warm.dirs.base, e);
            return Err((err, Box::new(warm)));
        }
        Ok(Sandbox {
            spec: spec.clone(),
            client: AsyncAgentClient::unix(dirs.socket()),
            dirs,
            cgroup: warm.cgroup,
            init_pid: warm.init_pid,
            created_at,
            agent_version: warm.agent_version,
            monitor: warm.monitor,
            stderr_tail: warm.stderr_tail,
            exit: warm.exit,
            egress: warm.egress,
        })
    }

    /// Starts warm sandboxes of `spec`'s class in the background, one at a time, up to
    /// `size`, each once creates have stopped taking them for a moment ([`QUIET`]).
    fn fill_warm(&self, spec: &LocalSpec, class: &WarmClass, size: usize) {
        if !self.warm.begin_fill(class) {
            return;
        }
        let worker = self.warm_worker();
        let (mut template, class) = (spec.clone(), class.clone());
        // Not the layers: a fork's may be gone (its snapshot removed) by the next start.
        template.layers = RootLayers::new(Vec::new());
        tokio::spawn(async move {
            let mut failed = false;
            while worker.warm.go_on_filling(&class, size, failed) {
                if let Some(wait) = worker.warm.quiet_wait() {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let Ok(id) = SandboxId::new(worker.warm.next_name()) else {
                    failed = true;
                    continue;
                };
                lock(&worker.warm.names).insert(id.to_string());
                template.id = id.clone();
                match worker
                    .start_with(&template, Root::Later)
                    .await
                    .map(Arc::try_unwrap)
                {
                    Ok(Ok(sandbox)) => match worker.warm.put(&class, sandbox) {
                        None => continue,
                        Some(closed) => worker.discard_warm(closed).await,
                    },
                    Ok(Err(shared)) => {
                        let _ = worker.destroy_sandbox(shared).await;
                    }
                    // Stop filling after a failure: the next create tries again.
                    Err(err) => tracing::warn!(error = %err, "cannot start a warm sandbox"),
                }
                lock(&worker.warm.names).remove(id.as_str());
                failed = true;
            }
            if !failed {
                tracing::info!(
                    ready = worker.warm.ready_of(&class),
                    size,
                    "warm pool filled"
                );
            }
        });
    }

    /// Keeps `size` sandboxes of `spec`'s class started ahead, as `warm_pools` does for an
    /// image (any create or fork of that class then takes one); returns once they are
    /// ready.
    pub async fn keep_warm(&self, spec: &LocalSpec, size: usize) -> Result<()> {
        let class = WarmClass::of(spec).ok_or_else(|| {
            RuntimeError::InvalidSpec("a sandbox with binds or an egress cannot be warm".into())
        })?;
        self.warm.size_of(&class, Some(size));
        self.fill_warm(spec, &class, size);
        loop {
            let ready = self.warm.ready_of(&class);
            if ready >= size {
                return Ok(());
            }
            if !lock(&self.warm.filling).contains(&class) {
                return Err(RuntimeError::HostNotReady(format!(
                    "the warm pool stopped at {ready} of {size}: see the log"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Tears down a warm sandbox nobody will take.
    async fn discard_warm(&self, sandbox: Sandbox) {
        let name = sandbox.spec.id.to_string();
        if let Err(err) = self.destroy_sandbox(Arc::new(sandbox)).await {
            tracing::warn!(warm = name, error = %err, "cannot tear down a warm sandbox");
        }
        lock(&self.warm.names).remove(&name);
    }

    /// Tears down every warm sandbox (shutdown).
    pub(crate) async fn drain_warm(&self) {
        for sandbox in self.warm.drain() {
            self.discard_warm(sandbox).await;
        }
    }

    /// A runtime on the same root, cgroups, disks and pools, for a background task:
    /// what `start` uses. Its own table and admission stay empty (warm sandboxes are
    /// nobody's until taken).
    fn warm_worker(&self) -> LocalRuntime {
        LocalRuntime {
            config: self.config.clone(),
            cgroups: Arc::clone(&self.cgroups),
            staged: self.staged.clone(),
            seccomp_files: self.seccomp_files.clone(),
            slots: Slots::default(),
            socket_root: self.socket_root.clone(),
            disks: Arc::clone(&self.disks),
            disk_mode: self.disk_mode,
            admission: Admission::new(Budget {
                memory_bytes: self.memory_budget(),
                memory_overcommit: self.config.memory_overcommit,
                disk_overcommit: self.config.disk_overcommit,
            }),
            images: None,
            warm: Arc::clone(&self.warm),
            host_tuned: Arc::clone(&self.host_tuned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime restarted in the same process (same pid, counting from 0 again) names its
    /// warm sandboxes apart from the last one's, whose taken ones keep their cgroups.
    #[test]
    fn warm_names_differ_across_runtimes_of_one_process() {
        let before = WarmPools::default();
        let first = [before.next_name(), before.next_name()];
        assert_ne!(first[0], first[1]);
        std::thread::sleep(Duration::from_millis(2));
        let after = WarmPools::default();
        let again = after.next_name();
        assert!(!first.contains(&again), "{again} in {first:?}");
        for name in first.iter().chain([&again]) {
            assert!(name.starts_with("warm-"), "{name}");
            assert!(SandboxId::new(name.clone()).is_ok(), "{name}");
        }
    }
}
