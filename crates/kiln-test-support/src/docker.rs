//! A private Docker engine for the Docker backend's tests and benchmarks, started once
//! per test binary by `scripts/start-dockerd.sh` (own data root, exec root and socket;
//! no bridge, no iptables), shared by every suite that needs one.

use std::process::Command;
use std::sync::OnceLock;

use crate::workspace_root;

/// The engine's address (`unix://…`), or `None` when it cannot start here: the caller
/// skips, after this printed why. With `KILN_REQUIRE_DOCKER=1` it panics instead, so a
/// machine that must run these tests cannot pass without them. `KILN_TEST_DOCKER_HOST`
/// names an engine already running instead.
pub fn docker_host() -> Option<String> {
    static HOST: OnceLock<Result<String, String>> = OnceLock::new();
    let host = HOST.get_or_init(|| {
        // An engine someone else started (the cgroup v2 VM's, on an XFS data root).
        if let Ok(host) = std::env::var("KILN_TEST_DOCKER_HOST") {
            return Ok(host);
        }
        if !is_root() {
            return Err("the Docker tests need root (they start their own dockerd)".into());
        }
        let script = workspace_root().join("scripts/start-dockerd.sh");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "dockerd cannot start here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.lines().last().unwrap_or_default().trim().to_string())
    });
    match host {
        Ok(host) => Some(host.clone()),
        Err(why) if std::env::var("KILN_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("KILN_REQUIRE_DOCKER=1 but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED (Docker backend): {why}");
            None
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
