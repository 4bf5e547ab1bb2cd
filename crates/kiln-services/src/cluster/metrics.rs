//! The node registry's Prometheus series (issue 12), in the server's one registry
//! (`/metrics`, per process): requests relayed to another node by outcome, placement
//! decisions by chosen node and outcome, and every node's heartbeat age as this node last
//! read the registry (on the database's clock, at each of its own heartbeats).
use prometheus::{GaugeVec, IntCounterVec, Opts};

use crate::metrics::Metrics;

/// What became of a request that another node should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardOutcome {
    /// Relayed to the owner, whose answer (any status) was passed on.
    Relayed,
    /// The owner could not be reached and the read was answered here, from the store.
    ReadHere,
    /// The owner could not be reached or spoken to: a 502.
    Failed,
    /// A long-poll answered here, woken by the owner's changes through the store's
    /// change feed (not relayed).
    WaitedHere,
}

impl ForwardOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relayed => "relayed",
            Self::ReadHere => "read_here",
            Self::Failed => "failed",
            Self::WaitedHere => "waited_here",
        }
    }
}

pub(crate) struct ClusterMetrics {
    forwarded: IntCounterVec,
    placements: IntCounterVec,
    heartbeat_age: GaugeVec,
}

impl ClusterMetrics {
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let made = Self {
            forwarded: valid(IntCounterVec::new(
                Opts::new(
                    "forwarded_requests_total",
                    "Requests for another node's session or for a placed create, by outcome \
                     (relayed, read_here: owner unreachable and answered from the store, failed, \
                     waited_here: a long-poll answered here, woken through LISTEN/NOTIFY).",
                ),
                &["outcome"],
            )),
            placements: valid(IntCounterVec::new(
                Opts::new(
                    "placements_total",
                    "Placement decisions of creates received here, by chosen node and outcome \
                     (local, remote, refused: every node full, draining or down).",
                ),
                &["node", "outcome"],
            )),
            heartbeat_age: valid(GaugeVec::new(
                Opts::new(
                    "node_heartbeat_age_seconds",
                    "Age of each node's last heartbeat on the database's clock, read at this \
                     node's last heartbeat.",
                ),
                &["node"],
            )),
        };
        metrics.register_extra(Box::new(made.forwarded.clone()));
        metrics.register_extra(Box::new(made.placements.clone()));
        metrics.register_extra(Box::new(made.heartbeat_age.clone()));
        made
    }

    pub(crate) fn forwarded(&self, outcome: ForwardOutcome) {
        self.forwarded.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(crate) fn placed(&self, node: &str, outcome: &str) {
        self.placements.with_label_values(&[node, outcome]).inc();
    }

    pub(crate) fn heartbeat_age(&self, node: &str, age: chrono::Duration) {
        // Milliseconds to seconds: an f64 holds any such count exactly enough.
        #[allow(clippy::cast_precision_loss)]
        let seconds = age.num_milliseconds() as f64 / 1e3;
        self.heartbeat_age.with_label_values(&[node]).set(seconds);
    }
}

/// The names, help texts and labels are constants registered once: an error here is a bug
/// in this file (the unit test builds them), not something a user or the host can cause.
fn valid<T>(made: prometheus::Result<T>) -> T {
    #[allow(clippy::expect_used)]
    made.expect("static metric definitions are valid and registered once")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_forwarding_placement_and_heartbeat_age() {
        let metrics = Metrics::new();
        let cluster = ClusterMetrics::new(&metrics);
        cluster.forwarded(ForwardOutcome::Relayed);
        cluster.forwarded(ForwardOutcome::Relayed);
        cluster.placed("node-a", "remote");
        cluster.heartbeat_age("node-a", chrono::Duration::milliseconds(250));
        let text = metrics.render().unwrap();
        for line in [
            "kiln_forwarded_requests_total{outcome=\"relayed\"} 2",
            "kiln_placements_total{node=\"node-a\",outcome=\"remote\"} 1",
            "kiln_node_heartbeat_age_seconds{node=\"node-a\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
