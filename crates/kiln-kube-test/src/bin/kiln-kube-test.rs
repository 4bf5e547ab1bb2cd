//! The test API server and kubelet as a process, for tests outside Rust (`tests/sdk`):
//! starts a cluster, prints one JSON line `{"kubeconfig": …, "url": …}` once it
//! answers, and runs until SIGTERM or SIGINT (its Pods' agents stop with it).
//!
//! `kiln-kube-test --agent-binary PATH [--images-dir DIR] [--agent-image REF]
//! [--agent-sandbox]`; the agent defaults to `$KILN_AGENT_BIN`, the agent image to Kiln's
//! default `runtime.kubernetes.agent_image`.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_kube_test::{ClusterOptions, TestCluster};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: kiln-kube-test [--agent-binary PATH] [--images-dir DIR] \
                     [--agent-image REF] [--agent-sandbox]";

fn options() -> Result<ClusterOptions, String> {
    let mut agent = std::env::var_os("KILN_AGENT_BIN").map(PathBuf::from);
    let mut agent_image = "ghcr.io/kiln/kiln-agent:latest".to_string();
    let mut images_dir = None;
    let mut agent_sandbox = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--agent-binary" => agent = Some(PathBuf::from(value()?)),
            "--images-dir" => images_dir = Some(PathBuf::from(value()?)),
            "--agent-image" => agent_image = value()?,
            "--agent-sandbox" => agent_sandbox = true,
            _ => return Err(format!("unknown argument {arg}\n{USAGE}")),
        }
    }
    let agent =
        agent.ok_or_else(|| format!("no agent: --agent-binary or KILN_AGENT_BIN\n{USAGE}"))?;
    if !agent.is_file() {
        return Err(format!("{}: no such file", agent.display()));
    }
    let mut options = ClusterOptions::new(agent, agent_image);
    options.images_dir = images_dir;
    options.agent_sandbox = agent_sandbox;
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("kiln-kube-test: {message}");
            return ExitCode::from(2);
        }
    };
    let signals =
        signal(SignalKind::terminate()).and_then(|t| Ok((t, signal(SignalKind::interrupt())?)));
    let (mut term, mut int) = match signals {
        Ok(s) => s,
        Err(err) => {
            eprintln!("kiln-kube-test: signals: {err}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = match TestCluster::start(options).await {
        Ok(cluster) => cluster,
        Err(err) => {
            eprintln!("kiln-kube-test: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let ready = serde_json::json!({
        "kubeconfig": cluster.kubeconfig(),
        "url": cluster.url(),
    });
    println!("{ready}");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    // Dropping the cluster ends its Pods' agents and removes its directory.
    drop(cluster);
    ExitCode::SUCCESS
}
