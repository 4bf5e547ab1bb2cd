//! How an exec request becomes a `Command`: shell, environment, working directory.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::SigSet;

use kiln_protocol::{AgentError, Command as ExecCommand, ErrorCode, ExecRequest};

/// The environment every command starts from, before the agent's own and the request's.
const DEFAULT_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
    ("TZ", "UTC"),
];

/// Variables meant for the agent itself, not passed on.
const AGENT_ONLY_ENV: &[&str] = &["KILN_AGENT_SOCKET", "KILN_AGENT_SECRET"];

/// Working directory when the request names none and `/testbed` exists.
const DEFAULT_CWD: &str = "/testbed";

/// The defaults overlaid with the agent's own environment, which is how a runtime
/// passes an image's `ENV` (e.g. a conda `PATH`) down to every command.
pub fn base_env(
    inherited: impl Iterator<Item = (OsString, OsString)>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = DEFAULT_ENV
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    for (key, value) in inherited {
        if !AGENT_ONLY_ENV.iter().any(|skip| OsStr::new(skip) == key) {
            env.insert(key, value);
        }
    }
    env
}

/// `bash` from `PATH` if present, else `sh`, else `/bin/sh`.
pub fn find_shell(path_var: Option<&OsStr>) -> PathBuf {
    for name in ["bash", "sh"] {
        if let Some(found) = path_var.and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        }) {
            return found;
        }
    }
    PathBuf::from("/bin/sh")
}

/// The requested directory, which must exist; otherwise `/testbed` or `/`.
pub fn resolve_cwd(requested: Option<&str>) -> Result<PathBuf, AgentError> {
    let Some(dir) = requested else {
        let testbed = Path::new(DEFAULT_CWD);
        return Ok(if testbed.is_dir() {
            testbed.to_path_buf()
        } else {
            PathBuf::from("/")
        });
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(PathBuf::from(dir)),
        Ok(_) => Err(AgentError::new(
            ErrorCode::NotADirectory,
            format!("working directory {dir} is not a directory"),
        )),
        Err(err) => Err(AgentError::new(
            ErrorCode::NotFound,
            format!("working directory {dir}: {err}"),
        )),
    }
}

/// Builds the command: its own process group (so timeouts can kill everything it
/// started), a fresh environment, the working directory. Stdio is the caller's job.
pub fn build_command(
    request: &ExecRequest,
    base: &BTreeMap<OsString, OsString>,
) -> Result<Command, AgentError> {
    let mut env = base.clone();
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(AgentError::new(
                ErrorCode::InvalidRequest,
                format!("invalid environment variable {key:?}"),
            ));
        }
        env.insert(OsString::from(key), OsString::from(value));
    }
    let mut command = match &request.command {
        ExecCommand::Shell(line) => {
            if line.contains('\0') {
                return Err(AgentError::new(
                    ErrorCode::InvalidRequest,
                    "command contains a NUL byte",
                ));
            }
            let mut command = Command::new(find_shell(
                env.get(OsStr::new("PATH")).map(|p| p.as_os_str()),
            ));
            command.arg("-c").arg(line);
            command
        }
        ExecCommand::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return Err(AgentError::new(ErrorCode::InvalidRequest, "argv is empty"));
            };
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    };
    command
        .env_clear()
        .envs(&env)
        .current_dir(resolve_cwd(request.cwd.as_deref())?)
        .process_group(0);
    // The agent blocks the signals it takes with sigwait, and std no longer clears the
    // mask on spawn: without this, commands would start with SIGTERM blocked and a
    // timeout's SIGTERM would do nothing.
    // SAFETY: the closure runs in the forked child before exec; it only calls
    // pthread_sigmask, which is async-signal-safe, on a stack-allocated empty set, and
    // builds its error from a raw errno (no allocation).
    unsafe {
        command.pre_exec(|| {
            SigSet::empty()
                .thread_set_mask()
                .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))
        });
    }
    Ok(command)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shell_falls_back_to_sh_when_bash_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sh"), "").unwrap();
        assert_eq!(
            find_shell(Some(dir.path().as_os_str())),
            dir.path().join("sh")
        );
        std::fs::write(dir.path().join("bash"), "").unwrap();
        assert_eq!(
            find_shell(Some(dir.path().as_os_str())),
            dir.path().join("bash")
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            find_shell(Some(empty.path().as_os_str())),
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn inherited_env_overrides_defaults_but_not_agent_settings() {
        let env = base_env(
            [
                (
                    OsString::from("PATH"),
                    OsString::from("/opt/conda/bin:/usr/bin"),
                ),
                (
                    OsString::from("KILN_AGENT_SOCKET"),
                    OsString::from("/run/a.sock"),
                ),
            ]
            .into_iter(),
        );
        assert_eq!(env[OsStr::new("PATH")], "/opt/conda/bin:/usr/bin");
        assert_eq!(env[OsStr::new("TZ")], "UTC");
        assert!(!env.contains_key(OsStr::new("KILN_AGENT_SOCKET")));
    }

    #[test]
    fn missing_cwd_is_not_found() {
        let err = resolve_cwd(Some("/definitely/not/here")).unwrap_err();
        assert_eq!(err.code, ErrorCode::NotFound);
        assert!(err.message.contains("/definitely/not/here"));
    }
}
