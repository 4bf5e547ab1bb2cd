//! Runs a build step inside an image: the image's layers as overlayfs lower directories, a
//! fresh upper directory that collects what the step writes (the new layer), `chroot` into
//! the merged tree. Everything happens in a private mount namespace (`unshare --mount`), so
//! the mounts disappear with the step, however it ends.

use std::path::Path;
use std::process::Command;

use crate::error::{EnvImageError, Result};
use crate::tool_command::run_logged;

/// Where the host's pip cache is mounted during a step (inside the step's `/tmp`, a tmpfs,
/// so the mount point never lands in the layer).
pub(crate) const PIP_CACHE_IN_STEP: &str = "/tmp/.kiln-pip-cache";
/// Where the build host's CA bundle is mounted during a step, when it has one: downloads
/// trust what the host trusts (an HTTPS proxy's own CA), and the image keeps its own.
pub(crate) const HOST_CA_IN_STEP: &str = "/tmp/.kiln-host-ca.crt";
/// The build host's CA bundle (Debian's location).
pub(crate) const HOST_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What a step runs and sees.
pub(crate) struct Step<'a> {
    /// `lowerdir=` for overlayfs, topmost first (see `kiln_image::Image::overlay_lowerdir`).
    pub lowerdir: &'a str,
    /// Receives every file the step creates or changes; may already hold files (a checkout).
    pub upper: &'a Path,
    /// overlayfs's work directory: empty, on the same filesystem as `upper`.
    pub work: &'a Path,
    /// Where the merged tree is mounted (an empty directory).
    pub merged: &'a Path,
    /// Host directory mounted at [`PIP_CACHE_IN_STEP`].
    pub pip_cache: &'a Path,
    /// Host file mounted at [`HOST_CA_IN_STEP`], if any.
    pub host_ca: Option<&'a Path>,
    /// The environment of the command (nothing of the builder's leaks in).
    pub env: &'a [(String, String)],
    /// Working directory inside the image.
    pub cwd: &'a str,
    /// A bash script, run with `-euxo pipefail` as the harness runs its setup scripts.
    pub script: &'a str,
}

/// The mount-and-chroot wrapper. Paths arrive as positional parameters, never spliced into
/// the script text.
const WRAPPER: &str = r#"set -eu
lower=$1 upper=$2 work=$3 merged=$4 cache=$5 cwd=$6 script=$7 ca=$8
shift 8
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mount -t proc proc "$merged/proc"
mount --bind /dev "$merged/dev"
mount -t tmpfs -o mode=1777 tmpfs "$merged/tmp"
mkdir -p "$merged/tmp/.kiln-pip-cache"
mount --bind "$cache" "$merged/tmp/.kiln-pip-cache"
if [ -n "$ca" ]; then
  : > "$merged/tmp/.kiln-host-ca.crt"
  mount --bind "$ca" "$merged/tmp/.kiln-host-ca.crt"
fi
if [ -e "$merged/etc/resolv.conf" ] && [ -e /etc/resolv.conf ]; then
  mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"
fi
exec chroot "$merged" /usr/bin/env -i "$@" /bin/bash -c 'cd "$0" && exec /bin/bash -euxo pipefail -c "$1"' "$cwd" "$script"
"#;

/// The command that runs `step` (needs root: mounts and chroot).
pub(crate) fn step_command(step: &Step<'_>) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(WRAPPER)
        .arg("kiln-build-step")
        .arg(step.lowerdir)
        .arg(step.upper)
        .arg(step.work)
        .arg(step.merged)
        .arg(step.pip_cache)
        .arg(step.cwd)
        .arg(step.script)
        .arg(step.host_ca.unwrap_or(Path::new("")));
    for (key, value) in step.env {
        command.arg(format!("{key}={value}"));
    }
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command
}

/// Runs `step`, forwarding its output line by line.
pub(crate) fn run_step(step: &Step<'_>, on_line: impl FnMut(&str)) -> Result<()> {
    for dir in [step.upper, step.work, step.merged, step.pip_cache] {
        std::fs::create_dir_all(dir).map_err(EnvImageError::io("create", dir))?;
    }
    run_logged(step_command(step), on_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_script_are_arguments_not_script_text() {
        let env = [("PATH".to_owned(), "/opt/venv/bin:/usr/bin".to_owned())];
        let step = Step {
            lowerdir: "/l/b:/l/a",
            upper: Path::new("/w/upper"),
            work: Path::new("/w/work"),
            merged: Path::new("/w/merged"),
            pip_cache: Path::new("/c/pip"),
            host_ca: None,
            env: &env,
            cwd: "/testbed",
            script: "echo '$(x)'",
        };
        let cmd = step_command(&step);
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args[..6],
            ["--mount", "--propagation", "private", "--", "/bin/sh", "-c"]
        );
        assert!(!args[6].contains("/l/b"));
        assert_eq!(
            args[7..],
            [
                "kiln-build-step",
                "/l/b:/l/a",
                "/w/upper",
                "/w/work",
                "/w/merged",
                "/c/pip",
                "/testbed",
                "echo '$(x)'",
                "",
                "PATH=/opt/venv/bin:/usr/bin"
            ]
        );
    }

    #[test]
    fn the_wrapper_is_valid_shell() {
        let out = Command::new("sh")
            .args(["-n", "-c", WRAPPER])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
