//! Prometheus metrics of sessions and of the node's sandboxes, in the text exposition
//! format. Counters and the create-latency histogram are updated where things happen;
//! gauges (sessions live, node capacity, usage of live sandboxes) are set when sampled or
//! when scraped. Who may read them is the HTTP layer's decision (`server.metrics_token`).
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use kiln_runtime::NodeCapacity;
use kiln_store::{Latency, NodeStats, SessionStatus};

use crate::error::{ServiceError, ServiceResult};

/// Buckets of the sandbox create latency, in seconds: from a pooled disk's few ms to a
/// slow, inline-formatted start.
const CREATE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Buckets of command wall time, in seconds: from a `true`'s millisecond to a test run.
const EXEC_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How many recent durations of each kind the node's percentiles are of.
const RECENT: usize = 1024;

/// The last [`RECENT`] durations of one kind, in microseconds.
#[derive(Default)]
struct Recent(Mutex<VecDeque<u64>>);

impl Recent {
    fn push(&self, took: Duration) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    fn latency(&self) -> Option<Latency> {
        let mut copy: Vec<u64> = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        Latency::of(&mut copy)
    }
}

/// Every metric Kiln exports, in a registry of its own (never the process-wide default:
/// tests run several servers in one process).
pub struct Metrics {
    registry: Registry,
    sessions_created: IntCounter,
    sessions_ended: IntCounterVec,
    sessions_live: IntGaugeVec,
    sandbox_create_seconds: Histogram,
    sandbox_create_failures: IntCounter,
    exec_seconds: Histogram,
    recent_creates: Recent,
    recent_execs: Recent,
    live_cpu_cores: Gauge,
    /// What `live_cpu_cores` says, exactly, or `None` before two samples.
    live_cpu_millicores: Mutex<Option<u64>>,
    interactions: IntCounterVec,
    verifications: IntCounterVec,
    ended_cpu_seconds: Counter,
    live_memory_peak_bytes: IntGauge,
    live_disk_used_bytes: IntGauge,
    live_pids: IntGauge,
    capacity: IntGaugeVec,
    overcommit: prometheus::GaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = valid(Registry::new_custom(Some("kiln".into()), None));
        let metrics = Self {
            sessions_created: valid(IntCounter::new(
                "sessions_created_total",
                "Sessions accepted (201).",
            )),
            sessions_ended: valid(IntCounterVec::new(
                Opts::new(
                    "sessions_ended_total",
                    "Sessions ended, by final status (error: failed to start).",
                ),
                &["status"],
            )),
            sessions_live: valid(IntGaugeVec::new(
                Opts::new(
                    "sessions_live",
                    "Sessions creating or ready, at scrape time.",
                ),
                &["status"],
            )),
            sandbox_create_seconds: valid(Histogram::with_opts(
                HistogramOpts::new(
                    "sandbox_create_seconds",
                    "Time from asking the runtime for a session's sandbox to its agent answering.",
                )
                .buckets(CREATE_BUCKETS.to_vec()),
            )),
            sandbox_create_failures: valid(IntCounter::new(
                "sandbox_create_failures_total",
                "Sandboxes of sessions that failed to start.",
            )),
            exec_seconds: valid(Histogram::with_opts(
                HistogramOpts::new(
                    "exec_seconds",
                    "Wall time of commands run through this node (interactions and /v1 \
                     execs), the command's own time included.",
                )
                .buckets(EXEC_BUCKETS.to_vec()),
            )),
            recent_creates: Recent::default(),
            recent_execs: Recent::default(),
            live_cpu_cores: valid(Gauge::new(
                "live_sandbox_cpu_cores",
                "CPU used by live sessions' sandboxes between their last two samples, in cores.",
            )),
            live_cpu_millicores: Mutex::new(None),
            interactions: valid(IntCounterVec::new(
                Opts::new(
                    "interactions_total",
                    "Interactions queued, by kind (exec_command, string_replace, file_upload).",
                ),
                &["kind"],
            )),
            verifications: valid(IntCounterVec::new(
                Opts::new(
                    "verifications_total",
                    "Verifications this node ran to an end, by outcome (resolved, unresolved, \
                     error, cancelled).",
                ),
                &["outcome"],
            )),
            ended_cpu_seconds: valid(Counter::new(
                "session_cpu_seconds_total",
                "CPU time used by the sandboxes of sessions that ended (their last sample).",
            )),
            live_memory_peak_bytes: valid(IntGauge::new(
                "live_sandbox_memory_peak_bytes",
                "Sum of the memory peaks of live sessions' sandboxes, as last sampled.",
            )),
            live_disk_used_bytes: valid(IntGauge::new(
                "live_sandbox_disk_used_bytes",
                "Sum of the disk in use by live sessions' sandboxes, as last sampled.",
            )),
            live_pids: valid(IntGauge::new(
                "live_sandbox_pids",
                "Processes and threads in live sessions' sandboxes, as last sampled.",
            )),
            capacity: valid(IntGaugeVec::new(
                Opts::new(
                    "node_capacity_bytes",
                    "Limits held by this node's sandboxes (reserved) and its budget, by resource.",
                ),
                &["resource", "kind"],
            )),
            overcommit: valid(prometheus::GaugeVec::new(
                Opts::new(
                    "node_overcommit_ratio",
                    "Admission allows limits up to the budget times this, by resource.",
                ),
                &["resource"],
            )),
            registry,
        };
        metrics.register();
        metrics
    }

    fn register(&self) {
        let all: [Box<dyn prometheus::core::Collector>; 15] = [
            Box::new(self.verifications.clone()),
            Box::new(self.sessions_created.clone()),
            Box::new(self.sessions_ended.clone()),
            Box::new(self.sessions_live.clone()),
            Box::new(self.sandbox_create_seconds.clone()),
            Box::new(self.sandbox_create_failures.clone()),
            Box::new(self.exec_seconds.clone()),
            Box::new(self.live_cpu_cores.clone()),
            Box::new(self.interactions.clone()),
            Box::new(self.ended_cpu_seconds.clone()),
            Box::new(self.live_memory_peak_bytes.clone()),
            Box::new(self.live_disk_used_bytes.clone()),
            Box::new(self.live_pids.clone()),
            Box::new(self.capacity.clone()),
            Box::new(self.overcommit.clone()),
        ];
        for collector in all {
            valid(self.registry.register(collector));
        }
    }

    pub(crate) fn session_created(&self) {
        self.sessions_created.inc();
    }

    pub(crate) fn session_ended(&self, status: SessionStatus) {
        self.sessions_ended
            .with_label_values(&[status.as_str()])
            .inc();
    }

    pub(crate) fn sandbox_created(&self, took: Duration) {
        self.sandbox_create_seconds.observe(took.as_secs_f64());
        self.recent_creates.push(took);
    }

    /// A verification ended: `resolved`, `unresolved`, `error` or `cancelled`.
    pub(crate) fn verification_ended(&self, outcome: &str) {
        self.verifications.with_label_values(&[outcome]).inc();
    }

    /// A command ran (to its end, its timeout or a kill) in `took`.
    pub(crate) fn exec_done(&self, took: Duration) {
        self.exec_seconds.observe(took.as_secs_f64());
        self.recent_execs.push(took);
    }

    /// CPU used by the live sandboxes between their last two samples.
    pub(crate) fn set_live_cpu(&self, millicores: u64) {
        // A few thousand cores at most: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        self.live_cpu_cores.set(millicores as f64 / 1000.0);
        *self
            .live_cpu_millicores
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(millicores);
    }

    /// The node's figures for its heartbeat: the last usage sums, `capacity` (from the
    /// runtime, when it keeps budgets) and the recent latencies.
    pub(crate) fn node_stats(&self, capacity: Option<&NodeCapacity>) -> NodeStats {
        let count = |g: &IntGauge| u64::try_from(g.get()).unwrap_or(0);
        let capacity = capacity.copied().unwrap_or_default();
        NodeStats {
            cpus: std::thread::available_parallelism()
                .map_or(0, |n| u64::try_from(n.get()).unwrap_or(u64::MAX)),
            sandbox_cpu_millicores: *self
                .live_cpu_millicores
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            memory_used_bytes: count(&self.live_memory_peak_bytes),
            memory_reserved_bytes: capacity.memory_reserved_bytes,
            memory_budget_bytes: capacity.memory_budget_bytes,
            disk_used_bytes: count(&self.live_disk_used_bytes),
            disk_reserved_bytes: capacity.disk_reserved_bytes,
            disk_budget_bytes: capacity.disk_budget_bytes,
            pids: count(&self.live_pids),
            create_latency: self.recent_creates.latency(),
            exec_latency: self.recent_execs.latency(),
        }
    }

    pub(crate) fn sandbox_create_failed(&self) {
        self.sandbox_create_failures.inc();
    }

    pub(crate) fn interaction(&self, kind: &str) {
        self.interactions.with_label_values(&[kind]).inc();
    }

    pub(crate) fn ended_cpu(&self, micros: u64) {
        // u64 → f64 loses precision past 2^53 µs (285 years of CPU): irrelevant.
        #[allow(clippy::cast_precision_loss)]
        self.ended_cpu_seconds.inc_by(micros as f64 / 1e6);
    }

    /// Sums over the last samples of the live sessions' sandboxes.
    pub(crate) fn set_live_usage(&self, memory_peak: u64, disk_used: u64, pids: u64) {
        self.live_memory_peak_bytes.set(gauge(memory_peak));
        self.live_disk_used_bytes.set(gauge(disk_used));
        self.live_pids.set(gauge(pids));
    }

    pub(crate) fn set_live_sessions(&self, creating: u64, ready: u64) {
        self.sessions_live
            .with_label_values(&["creating"])
            .set(gauge(creating));
        self.sessions_live
            .with_label_values(&["ready"])
            .set(gauge(ready));
    }

    pub(crate) fn set_capacity(&self, capacity: &NodeCapacity) {
        let set = |resource, kind, value| {
            self.capacity
                .with_label_values(&[resource, kind])
                .set(gauge(value));
        };
        set("memory", "reserved", capacity.memory_reserved_bytes);
        set("memory", "budget", capacity.memory_budget_bytes);
        set("disk", "reserved", capacity.disk_reserved_bytes);
        set("disk", "budget", capacity.disk_budget_bytes);
        self.overcommit
            .with_label_values(&["memory"])
            .set(capacity.memory_overcommit);
        self.overcommit
            .with_label_values(&["disk"])
            .set(capacity.disk_overcommit);
    }

    /// Adds another area's series (the node registry's) to this registry.
    pub(crate) fn register_extra(&self, collector: Box<dyn prometheus::core::Collector>) {
        valid(self.registry.register(collector));
    }

    /// Everything, in Prometheus's text format (version 0.0.4).
    pub fn render(&self) -> ServiceResult<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(internal)?;
        String::from_utf8(out).map_err(internal)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The names, help texts and labels are constants, each registered once: an error here is
/// a bug in this file (the unit test below builds them all), not something a user or the
/// host can cause.
fn valid<T>(made: prometheus::Result<T>) -> T {
    #[allow(clippy::expect_used)]
    made.expect("static metric definitions are valid and registered once")
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(format!("metrics: {e}"))
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_capacity() {
        let metrics = Metrics::new();
        metrics.session_created();
        metrics.session_ended(SessionStatus::Closed);
        metrics.sandbox_created(Duration::from_millis(40));
        metrics.interaction("exec_command");
        metrics.exec_done(Duration::from_millis(3));
        metrics.exec_done(Duration::from_millis(700));
        metrics.set_live_cpu(1250);
        metrics.verification_ended("resolved");
        metrics.ended_cpu(1_500_000);
        metrics.set_capacity(&NodeCapacity {
            memory_reserved_bytes: 2 << 30,
            memory_budget_bytes: 20 << 30,
            memory_overcommit: 2.0,
            ..NodeCapacity::default()
        });
        let text = metrics.render().unwrap();
        for line in [
            "kiln_sessions_created_total 1",
            "kiln_sessions_ended_total{status=\"closed\"} 1",
            "kiln_sandbox_create_seconds_bucket{le=\"0.05\"} 1",
            "kiln_sandbox_create_seconds_count 1",
            "kiln_interactions_total{kind=\"exec_command\"} 1",
            "kiln_session_cpu_seconds_total 1.5",
            "kiln_node_capacity_bytes{kind=\"budget\",resource=\"memory\"} 21474836480",
            "kiln_node_overcommit_ratio{resource=\"memory\"} 2",
            "kiln_exec_seconds_bucket{le=\"0.005\"} 1",
            "kiln_exec_seconds_count 2",
            "kiln_live_sandbox_cpu_cores 1.25",
            "kiln_verifications_total{outcome=\"resolved\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let stats = metrics.node_stats(None);
        assert_eq!(stats.sandbox_cpu_millicores, Some(1250));
        let execs = stats.exec_latency.unwrap();
        assert_eq!(
            (execs.count, execs.p50_us, execs.p99_us),
            (2, 3000, 700_000)
        );
        assert_eq!(stats.create_latency.map(|l| l.p90_us), Some(40_000));
        assert_eq!(stats.memory_budget_bytes, 0);
        assert!(stats.cpus >= 1, "{stats:?}");
    }
}
