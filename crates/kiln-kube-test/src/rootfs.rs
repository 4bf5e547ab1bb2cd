//! The test kubelet's stand-in for a container's root (`ClusterOptions::images_dir`):
//! the Pod's image is looked up in a Kiln image store, its unpacked layers mounted as an
//! overlay (the Pod's directory holds the writable layer) in a mount namespace of the
//! agent's own, with `/proc` and the host's `/dev`, and the agent runs chrooted into it
//! in the image's working directory, with the image's environment under the Pod's. So
//! paths such as a sample's `/testbed` and the image's tools resolve as in a container.
//! No other namespace: the agent still shares this machine's network, PIDs and host
//! name (its `127.x.y.z` address is how the server reaches it), and nothing is limited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_image::ImageStore;

/// Where the kubelet puts the agent inside the root (the Pod spec's `/.kiln/agent`).
const AGENT_IN_ROOT: &str = ".kiln/agent";

/// Mounts the root in a private mount namespace (`unshare --mount`) and starts the agent
/// in it: `$1` merged dir, `$2` lowerdir, `$3` upper, `$4` overlay work dir, `$5` working
/// directory, the rest the agent's arguments. Every mount dies with the namespace.
const SCRIPT: &str = r#"set -e
m=$1 l=$2 u=$3 w=$4 d=$5; shift 5
mount -t overlay overlay -o "lowerdir=$l,upperdir=$u,workdir=$w" "$m"
mkdir -p "$m/proc" "$m/dev" "$m$d"
mount -t proc proc "$m/proc"
mount --rbind /dev "$m/dev"
exec unshare --root="$m" --wd="$d" /.kiln/agent "$@"
"#;

/// A Pod's image, resolved in the store.
pub(super) struct Rootfs {
    /// overlayfs `lowerdir=`, topmost first.
    lowerdir: String,
    /// The image's `Env` (`K=V`).
    pub(super) env: BTreeMap<String, String>,
    /// The image's `WorkingDir` (`/` when unset).
    pub(super) workdir: String,
}

/// The image `reference` of the store at `images_dir`; `Err` is the pull's message.
pub(super) fn resolve(images_dir: &Path, reference: &str) -> Result<Rootfs, String> {
    let store = ImageStore::open(images_dir).map_err(|e| e.to_string())?;
    let image = store
        .get(reference)
        .map_err(|_| format!("failed to pull image \"{reference}\": not found"))?;
    let config = image.config();
    let env = config
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let workdir = config
        .working_dir
        .clone()
        .filter(|d| d.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    Ok(Rootfs {
        lowerdir: image.overlay_lowerdir().map_err(|e| e.to_string())?,
        env,
        workdir,
    })
}

/// The command that runs `agent` with `args` in a root of `rootfs` whose writable layer
/// lives under `pod_dir`, in `workdir`.
pub(super) fn agent_command(
    agent: &Path,
    pod_dir: &Path,
    rootfs: &Rootfs,
    workdir: &str,
    args: &[String],
) -> std::io::Result<tokio::process::Command> {
    let [merged, upper, work]: [PathBuf; 3] = ["merged", "upper", "work"].map(|d| pod_dir.join(d));
    for dir in [&merged, &upper, &work] {
        std::fs::create_dir_all(dir)?;
    }
    // The init container's copy: the agent in the Pod's own layer.
    let target = upper.join(AGENT_IN_ROOT);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(agent, &target)?;
    let mut command = tokio::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(SCRIPT)
        .arg("sh")
        .arg(&merged)
        .arg(&rootfs.lowerdir)
        .arg(&upper)
        .arg(&work)
        .arg(workdir)
        .args(args);
    Ok(command)
}
