//! `check_host` and the runtime judge the cgroup the server really runs in.
//!
//! On a normal host the cgroup check must pass. `scripts/cgroup2-vm.sh` also runs this
//! binary, on a pure cgroup v2 kernel, inside a cgroup whose parent did not delegate the
//! controllers (a systemd service without `Delegate=yes`), with
//! `KILN_TEST_EXPECT_CGROUPS=refused`: then both must refuse up front and say how to fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kiln_runtime::local::host_check::check_host;
use kiln_runtime::local::{LocalConfig, LocalRuntime};

#[test]
fn the_servers_own_cgroup_is_checked() {
    let root = tempfile::tempdir().unwrap();
    let agent = std::env::var_os("KILN_AGENT_BIN");
    let config = LocalConfig::new(
        root.path(),
        agent
            .clone()
            .unwrap_or_else(|| "/nonexistent/kiln-agent".into()),
    );
    let report = check_host(&config);
    let cgroups = report
        .checks
        .iter()
        .find(|c| c.name == "cgroups")
        .expect("a cgroups check");
    let refused = std::env::var("KILN_TEST_EXPECT_CGROUPS").as_deref() == Ok("refused");
    if !refused {
        assert!(cgroups.ok, "{report}");
        return;
    }
    assert!(!cgroups.ok, "{report}");
    assert!(
        cgroups
            .detail
            .contains("are not available in the server's cgroup"),
        "{report}"
    );
    assert!(
        cgroups
            .fix
            .as_deref()
            .unwrap_or("")
            .contains("Delegate=yes"),
        "{report}"
    );
    if agent.is_some() {
        let err = LocalRuntime::new(config).unwrap_err().to_string();
        assert!(err.contains("Delegate=yes"), "{err}");
    }
}
