//! Helpers shared by Kiln's tests (a dev-dependency only, never published): the static
//! agent binary, fresh PostgreSQL test databases, and
//! [`FakeRuntime`], a sandbox backend kept wholly in memory, so that services can be
//! tested in-process, in seconds, without root.
#![forbid(unsafe_code)]

pub mod docker;
pub mod fake;
pub mod mounts;
pub mod pki;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub use fake::{ExecCall, FakeRuntime, Files, Reply};

/// The static agent: `KILN_AGENT_BIN`, or built once per test binary with
/// `scripts/build-agent.sh` (which rebuilds it only when the agent changed).
///
/// # Panics
/// When the script fails: a test that needs the agent cannot run without it.
pub fn agent_binary() -> PathBuf {
    static AGENT: OnceLock<PathBuf> = OnceLock::new();
    AGENT
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("KILN_AGENT_BIN") {
                return PathBuf::from(path);
            }
            let script = workspace_root().join("scripts/build-agent.sh");
            let out = Command::new(&script)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            assert!(
                out.status.success(),
                "build-agent.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The script may log before it prints the path: the path is its last line.
            let stdout = String::from_utf8_lossy(&out.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        })
        .clone()
}

/// The workspace's root directory (where `scripts/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
