//! What each session's sandbox uses (CPU time, memory peak, disk, processes), sampled from
//! the runtime with the heartbeat and once more as the session ends (close, expiry, a
//! lost sandbox: before it is stored as ended, so before its sandbox is destroyed), and
//! stored with the session. Usage is information, not
//! a gate: a sample that cannot be read or stored is logged and skipped. Each live
//! session also keeps its last [`SERIES_POINTS`] samples in memory, its usage over time
//! (`GET /v1/instances/{id}/metrics`), gone with the session or a restart.
use chrono::Utc;
use kiln_runtime::{ResourceUsage, SandboxId};
use kiln_store::SessionUsage;

use super::{Readiness, SessionService};
use crate::error::ServiceResult;

/// Samples kept per live session: two hours at the default heartbeat of 30 s.
pub const SERIES_POINTS: usize = 240;

impl SessionService {
    /// Samples every ready session's sandbox and stores the samples; sets the live-usage
    /// gauges to their sums, and the CPU the sandboxes used since their previous samples.
    /// Returns how many it stored.
    pub async fn sample_usage(&self) -> usize {
        let ready: Vec<(String, SandboxId)> = self
            .lock_live()
            .iter()
            .filter_map(|(session, live)| match &*live.readiness.borrow() {
                Readiness::Ready(id) => Some((session.clone(), id.clone())),
                _ => None,
            })
            .collect();
        let (mut memory, mut disk, mut pids, mut stored) = (0u64, 0u64, 0u64, 0);
        // Thousandths of a core, over the sessions with a previous sample to compare with.
        let (mut cpu_millicores, mut cpu_known) = (0u64, false);
        for (session_id, sandbox) in ready {
            let Some(usage) = self.read_usage(&sandbox).await else {
                continue;
            };
            memory = memory.saturating_add(usage.memory_peak_bytes.unwrap_or(0));
            disk = disk.saturating_add(usage.disk_used_bytes.unwrap_or(0));
            pids = pids.saturating_add(usage.pids.unwrap_or(0));
            if let Some(sample) = self.store_usage(&session_id, &usage).await {
                stored += 1;
                if let Some(live) = self.lock_live().get(&session_id) {
                    let mut series = live.series.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(rate) = series.back().and_then(|prev| cpu_rate(prev, &sample)) {
                        cpu_millicores = cpu_millicores.saturating_add(rate);
                        cpu_known = true;
                    }
                    if series.len() >= SERIES_POINTS {
                        series.pop_front();
                    }
                    series.push_back(sample);
                }
            }
        }
        self.metrics.set_live_usage(memory, disk, pids);
        if cpu_known || stored == 0 {
            self.metrics.set_live_cpu(cpu_millicores);
        }
        stored
    }

    /// The last sample of a session about to end, taken before it is stored as ended, so
    /// whoever reads it ended reads its final usage. Its CPU time in microseconds, for the
    /// ended sessions' total (counted by the caller that wins the end).
    pub(super) async fn sample_before_end(&self, session_id: &str) -> Option<u64> {
        let sandbox = match &*self.lock_live().get(session_id)?.readiness.borrow() {
            Readiness::Ready(id) => id.clone(),
            _ => return None,
        };
        let usage = self.read_usage(&sandbox).await?;
        self.store_usage(session_id, &usage).await;
        usage
            .cpu_time
            .map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX))
    }

    async fn read_usage(&self, sandbox: &SandboxId) -> Option<ResourceUsage> {
        let (runtime, ..) = self.runtime().ok()?;
        runtime
            .usage(sandbox)
            .await
            .inspect_err(|e| tracing::debug!(sandbox = %sandbox, error = %e, "no usage sample"))
            .ok()
    }

    /// Seconds between two usage samples (the heartbeat's pace).
    pub fn usage_interval_secs(&self) -> u64 {
        self.billing.heartbeat_secs.max(1)
    }

    /// The caller's session's recent usage samples, oldest first, and whether it is
    /// still live here (an ended session has none).
    pub async fn usage_series(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> ServiceResult<(Vec<SessionUsage>, bool)> {
        self.owned(user_id, session_id).await?;
        let Some(live) = self.lock_live().get(session_id).cloned() else {
            return Ok((Vec::new(), false));
        };
        let series = live.series.lock().unwrap_or_else(|e| e.into_inner());
        Ok((series.iter().cloned().collect(), true))
    }

    /// Stores a sample; the sample, when it was stored.
    async fn store_usage(&self, session_id: &str, usage: &ResourceUsage) -> Option<SessionUsage> {
        let sample = SessionUsage {
            cpu_micros: usage
                .cpu_time
                .map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
            memory_peak_bytes: usage.memory_peak_bytes,
            disk_used_bytes: usage.disk_used_bytes,
            disk_limit_bytes: usage.disk_limit_bytes,
            pids_peak: usage.pids,
            sampled_at: Utc::now(),
        };
        self.store
            .record_session_usage(session_id, &sample)
            .await
            .inspect_err(|e| tracing::warn!(session = session_id, error = %e, "cannot store usage"))
            .unwrap_or(false)
            .then_some(sample)
    }

    /// This node's figures for its heartbeat: the last usage sums, the capacity its
    /// runtime reports, the recent latencies.
    pub(crate) async fn node_stats(&self) -> kiln_store::NodeStats {
        let capacity = match self.runtime() {
            Ok((runtime, ..)) => runtime.capacity().await,
            Err(_) => None,
        };
        self.metrics.node_stats(capacity.as_ref())
    }

    /// Renders the metrics, with the gauges read now: sessions live on this server (those
    /// with a worker here) and the node's capacity.
    pub async fn render_metrics(&self) -> ServiceResult<String> {
        let (mut creating, mut ready) = (0u64, 0u64);
        for live in self.lock_live().values() {
            match &*live.readiness.borrow() {
                Readiness::Creating => creating += 1,
                Readiness::Ready(_) => ready += 1,
                Readiness::Gone(_) => {}
            }
        }
        self.metrics.set_live_sessions(creating, ready);
        if let Ok((runtime, ..)) = self.runtime() {
            if let Some(capacity) = runtime.capacity().await {
                self.metrics.set_capacity(&capacity);
            }
        }
        self.metrics.render()
    }
}

/// Thousandths of a core a sandbox used between two of its samples, when both have a CPU
/// time and the later is later.
fn cpu_rate(before: &SessionUsage, after: &SessionUsage) -> Option<u64> {
    let used = after.cpu_micros?.checked_sub(before.cpu_micros?)?;
    let wall = u64::try_from((after.sampled_at - before.sampled_at).num_microseconds()?).ok()?;
    (wall > 0).then(|| used.saturating_mul(1000) / wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64, cpu_micros: Option<u64>) -> SessionUsage {
        SessionUsage {
            cpu_micros,
            memory_peak_bytes: None,
            disk_used_bytes: None,
            disk_limit_bytes: None,
            pids_peak: None,
            sampled_at: chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(millis),
        }
    }

    #[test]
    fn cpu_rate_is_cpu_time_over_wall_time() {
        // 1.5 CPU-seconds in 1 s of wall time: one and a half cores.
        assert_eq!(
            cpu_rate(&at(0, Some(0)), &at(1000, Some(1_500_000))),
            Some(1500)
        );
        assert_eq!(cpu_rate(&at(0, Some(10)), &at(2000, Some(10))), Some(0));
        assert_eq!(cpu_rate(&at(0, None), &at(1000, Some(5))), None);
        assert_eq!(cpu_rate(&at(1000, Some(0)), &at(1000, Some(5))), None);
        assert_eq!(cpu_rate(&at(0, Some(9)), &at(1000, Some(5))), None);
    }
}
