//! What the health probes report (`/health/live`, `/health/ready`, `/health/startup`):
//! whether start-up finished, and whether this server can serve — its store answers and
//! its sandbox backend is usable. Each check is bounded in time, so a hung store or
//! engine makes the probe fail instead of hang.
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::Kiln;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCheck {
    /// `store`, `runtime` or `startup`.
    pub name: &'static str,
    pub ok: bool,
    /// For people: what was found (the failure's cause and fix when not ok).
    pub detail: String,
}

/// Whether this server should receive traffic, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub checks: Vec<ProbeCheck>,
}

impl Readiness {
    /// Every check passed.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The failed checks, as one line for people.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Kiln {
    /// Whether [`Kiln::bootstrap`] finished (recovery included).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub(crate) fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// Start-up finished, the store answers and the sandbox backend is usable. A server
    /// configured without a backend (`runtime.backend = "none"`) serves what it can and
    /// counts as ready; one whose configured backend cannot run here does not.
    pub async fn readiness(&self) -> Readiness {
        let startup = ProbeCheck {
            name: "startup",
            ok: self.started(),
            detail: if self.started() {
                "finished".into()
            } else {
                "start-up recovery has not finished".into()
            },
        };
        let store = match tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => (true, format!("{} answers", self.store.backend())),
            Ok(Err(e)) => (false, e.to_string()),
            Err(_) => (false, format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        let runtime = self.runtime_check().await;
        Readiness {
            checks: vec![
                startup,
                ProbeCheck {
                    name: "store",
                    ok: store.0,
                    detail: store.1,
                },
                ProbeCheck {
                    name: "runtime",
                    ok: runtime.0,
                    detail: runtime.1,
                },
            ],
        }
    }

    async fn runtime_check(&self) -> (bool, String) {
        if self.config.runtime.backend == kiln_config::RuntimeBackend::None {
            return (true, "disabled (runtime.backend = \"none\")".into());
        }
        let available = match self.sandboxes.available() {
            Ok(available) => available,
            Err(why) => return (false, why.to_string()),
        };
        match tokio::time::timeout(CHECK_TIMEOUT, available.runtime.health()).await {
            Ok(report) if report.is_ready() => (true, available.location.clone()),
            Ok(report) => (
                false,
                report
                    .missing()
                    .map(|c| match &c.fix {
                        Some(fix) => format!("{} ({}; fix: {fix})", c.name, c.detail),
                        None => format!("{} ({})", c.name, c.detail),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Err(_) => (false, format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    }
}
