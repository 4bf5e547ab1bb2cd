//! The test kubelet: what happens to a Pod after its create. Scheduling against the
//! node's memory, image pulls (failing for the images it is told are missing), the init
//! container (succeeds only for the agent image), then the main container: its command
//! must be the injected agent, which runs as a process of this machine with the Pod's
//! environment (`$(VAR)` expanded, `status.podIP` from the downward API) on the Pod's
//! loopback address; Ready once its port answers (the Pod's tcpSocket probe).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{rootfs, Shared};

/// Where the Pod spec puts the agent (Kiln's `AGENT_PATH`).
const AGENT_PATH: &str = "/.kiln/agent";

pub(super) fn run(shared: Arc<Shared>, ns: String, name: String) {
    tokio::spawn(async move {
        tokio::time::sleep(shared.options.start_delay).await;
        let pod = shared.lock().pods.get(&(ns.clone(), name.clone())).cloned();
        if let Some(pod) = pod {
            start(&shared, &ns, &name, pod).await;
        }
    });
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<&str>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(Into::into),
        message: message.map(Into::into),
        ..Default::default()
    }
}

fn container_status(c: &Container, state: ContainerState, ready: bool) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready,
        restart_count: 0,
        state: Some(state),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some(message.into()),
        }),
        ..Default::default()
    }
}

fn terminated(code: i32, reason: &str, message: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.into()),
            message: Some(message.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Parses the quantities Kiln writes (plain bytes, `Ki`/`Mi`/`Gi`).
fn bytes(q: &Quantity) -> u64 {
    let s = q.0.as_str();
    for (suffix, unit) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap_or(0).saturating_mul(unit);
        }
    }
    s.parse().unwrap_or(0)
}

async fn start(shared: &Arc<Shared>, ns: &str, name: &str, pod: Pod) {
    let options = &shared.options;
    let spec = pod.spec.clone().unwrap_or_default();
    let memory: u64 = spec
        .containers
        .iter()
        .filter_map(|c| {
            c.resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("memory")
                .map(bytes)
        })
        .sum();
    if memory > options.node_memory_bytes {
        shared.update_status(ns, name, |s| {
            s.conditions = Some(vec![condition(
                "PodScheduled",
                false,
                Some("Unschedulable"),
                Some("0/1 nodes are available: 1 Insufficient memory."),
            )]);
        });
        return;
    }
    let ip = next_ip();
    let pull = |c: &Container| {
        let image = c.image.clone().unwrap_or_default();
        options.missing_images.contains(&image).then(|| {
            waiting(
                "ErrImagePull",
                &format!("failed to pull image \"{image}\": not found"),
            )
        })
    };
    // Init containers: pulled, then "run": only the agent image holds the agent.
    let mut init_statuses = Vec::new();
    for init in spec.init_containers.iter().flatten() {
        if let Some(failed) = pull(init) {
            init_statuses.push(container_status(init, failed, false));
            set_pending(shared, ns, name, ip, init_statuses, Vec::new());
            return;
        }
        let image = init.image.clone().unwrap_or_default();
        let state = if image == options.agent_image {
            terminated(0, "Completed", "")
        } else {
            terminated(
                1,
                "Error",
                "cp: can't stat '/kiln-agent': No such file or directory",
            )
        };
        let ok = image == options.agent_image;
        init_statuses.push(container_status(init, state, false));
        if !ok {
            set_pending(shared, ns, name, ip, init_statuses, Vec::new());
            return;
        }
    }
    let Some(main) = spec.containers.first() else {
        return;
    };
    if let Some(failed) = pull(main) {
        set_pending(
            shared,
            ns,
            name,
            ip,
            init_statuses,
            vec![container_status(main, failed, false)],
        );
        return;
    }
    // The image's root, from Kiln's image store when the cluster has one.
    let rootfs = match &options.images_dir {
        Some(dir) => match rootfs::resolve(dir, main.image.as_deref().unwrap_or_default()) {
            Ok(rootfs) => Some(rootfs),
            Err(message) => {
                let state = waiting("ErrImagePull", &message);
                let statuses = vec![container_status(main, state, false)];
                set_pending(shared, ns, name, ip, init_statuses, statuses);
                return;
            }
        },
        None => None,
    };
    let image_env = rootfs.as_ref().map(|r| r.env.clone()).unwrap_or_default();
    let secrets = shared.lock().secrets.clone();
    let Some((program, args, env)) = command(main, ip, ns, &secrets, image_env) else {
        let state = waiting("CreateContainerConfigError", "a secret it names is missing");
        set_pending(
            shared,
            ns,
            name,
            ip,
            init_statuses,
            vec![container_status(main, state, false)],
        );
        return;
    };
    if program != AGENT_PATH {
        let state = waiting(
            "RunContainerError",
            "the test kubelet runs only the Kiln agent",
        );
        set_pending(
            shared,
            ns,
            name,
            ip,
            init_statuses,
            vec![container_status(main, state, false)],
        );
        return;
    }
    let main = main.clone();
    let run = Run { args, env, rootfs };
    run_agent(shared, ns, name, ip, &main, init_statuses, run).await;
}

/// How the main container's agent is started.
struct Run {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The image's root (`None`: the Pod's directory, no image).
    rootfs: Option<rootfs::Rootfs>,
}

/// The agent's process: chrooted into the image's root when there is one, else in the
/// Pod's directory.
fn spawn_agent(
    agent: &std::path::Path,
    pod_dir: &std::path::Path,
    main: &Container,
    run: &Run,
) -> std::io::Result<tokio::process::Child> {
    std::fs::create_dir_all(pod_dir)?;
    let mut command = match &run.rootfs {
        Some(rootfs) => {
            let workdir = main.working_dir.as_deref().unwrap_or(&rootfs.workdir);
            rootfs::agent_command(agent, pod_dir, rootfs, workdir, &run.args)?
        }
        None => {
            let mut command = tokio::process::Command::new(agent);
            command.args(&run.args);
            command
        }
    };
    command
        .env_clear()
        .envs(&run.env)
        .current_dir(pod_dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Runs the agent as a process of this machine until it exits, is killed, or its Pod is
/// deleted, reporting each step in the Pod's status.
async fn run_agent(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    main: &Container,
    init_statuses: Vec<ContainerStatus>,
    run: Run,
) {
    let options = &shared.options;
    let workdir = shared.dir_for(ns, name);
    let child = spawn_agent(&options.agent_binary, &workdir, main, &run);
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            let state = terminated(128, "StartError", &err.to_string());
            set_pending(
                shared,
                ns,
                name,
                ip,
                init_statuses,
                vec![container_status(main, state, false)],
            );
            return;
        }
    };
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel();
    shared
        .lock()
        .kills
        .insert((ns.to_string(), name.to_string()), kill_tx);
    let running = ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    };
    let main_c = main.clone();
    let status = |ready: bool| {
        let inits = init_statuses.clone();
        let mains = vec![container_status(&main_c, running.clone(), ready)];
        move |s: &mut PodStatus| {
            s.phase = Some("Running".into());
            s.pod_ip = Some(ip.to_string());
            s.init_container_statuses = Some(inits);
            s.container_statuses = Some(mains);
            s.conditions = Some(vec![
                condition("PodScheduled", true, None, None),
                condition("Ready", ready, None, None),
            ]);
        }
    };
    shared.update_status(ns, name, status(false));
    // The readiness probe: the agent's port answers.
    let port = main
        .ports
        .iter()
        .flatten()
        .next()
        .map_or(7171, |p| p.container_port);
    let addr = SocketAddr::new(ip.into(), u16::try_from(port).unwrap_or(7171));
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            shared.update_status(ns, name, status(true));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended = tokio::select! {
        exit = child.wait() => Some((exit.ok().and_then(|e| e.code()).unwrap_or(137), "Error".to_string())),
        reason = kill_rx => {
            let _ = child.kill().await;
            reason.ok().flatten().map(|r| (137, r))
        }
    };
    if let Some((code, reason)) = ended {
        let main_c = main.clone();
        shared.update_status(ns, name, move |s| {
            s.phase = Some("Failed".into());
            s.container_statuses = Some(vec![container_status(
                &main_c,
                terminated(code, &reason, ""),
                false,
            )]);
            s.conditions = Some(vec![
                condition("PodScheduled", true, None, None),
                condition("Ready", false, None, None),
            ]);
        });
    }
    let _ = std::fs::remove_dir_all(workdir);
}

/// A loopback address no other Pod of this process (of any test cluster in it) has:
/// `127.<100 + pid % 100>.x.y`, so test binaries running at once do not meet either.
fn next_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (250 * 250);
    let second = 100 + (std::process::id() % 100);
    Ipv4Addr::new(
        127,
        u8::try_from(second).unwrap_or(100),
        u8::try_from(n / 250).unwrap_or(0),
        u8::try_from(n % 250 + 1).unwrap_or(1),
    )
}

fn set_pending(
    shared: &Shared,
    ns: &str,
    name: &str,
    ip: Ipv4Addr,
    inits: Vec<ContainerStatus>,
    mains: Vec<ContainerStatus>,
) {
    shared.update_status(ns, name, move |s| {
        s.phase = Some("Pending".into());
        s.pod_ip = Some(ip.to_string());
        s.init_container_statuses = Some(inits);
        s.container_statuses = Some(mains);
        s.conditions = Some(vec![
            condition("PodScheduled", true, None, None),
            condition("Ready", false, None, None),
        ]);
    });
}

/// The container's program, its arguments with `$(VAR)` expanded, and its environment
/// (`status.podIP` from the downward API, `secretKeyRef`s from the namespace's Secrets;
/// other sources are not imitated). `None` when a Secret or key it names is missing.
fn command(
    c: &Container,
    ip: Ipv4Addr,
    ns: &str,
    secrets: &BTreeMap<(String, String), Secret>,
    image_env: BTreeMap<String, String>,
) -> Option<(String, Vec<String>, BTreeMap<String, String>)> {
    // The image's environment under the container's, as a runtime merges them.
    let mut env = image_env;
    env.entry("PATH".to_string()).or_insert_with(|| {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
    });
    for var in c.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(key) = &from.secret_key_ref {
                    let secret = secrets.get(&(ns.to_string(), key.name.clone()))?;
                    let bytes = secret.data.as_ref()?.get(&key.key)?;
                    String::from_utf8(bytes.0.clone()).ok()?
                } else if from.field_ref.as_ref().map(|f| f.field_path.as_str())
                    == Some("status.podIP")
                {
                    ip.to_string()
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    let expand = |s: &String| {
        let mut out = s.clone();
        for (k, v) in &env {
            out = out.replace(&format!("$({k})"), v);
        }
        out
    };
    let mut argv: Vec<String> = c.command.iter().flatten().map(expand).collect();
    argv.extend(c.args.iter().flatten().map(expand));
    let program = if argv.is_empty() {
        String::new()
    } else {
        argv.remove(0)
    };
    Some((program, argv, env))
}
