//! How an exec request becomes a [`Launch`]: shell or program, environment, working
//! directory.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_protocol::{AgentError, Command as ExecCommand, ErrorCode, ExecRequest};

use crate::spawn::Launch;

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
    path_var
        .and_then(|paths| {
            ["bash", "sh"]
                .into_iter()
                .find_map(|name| on_path(name, paths, |m| m.is_file()))
        })
        .unwrap_or_else(|| PathBuf::from("/bin/sh"))
}

/// The first `dir/name` of the `PATH` value `paths` whose metadata `accept`s.
fn on_path(name: &str, paths: &OsStr, accept: impl Fn(&Metadata) -> bool) -> Option<PathBuf> {
    std::env::split_paths(paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.metadata().is_ok_and(|m| accept(&m)))
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

/// Resolves the request into what [`crate::spawn::spawn`] starts: the shell (`-c line`)
/// or the argv's program found on the command's `PATH` as `execvp` would, a fresh
/// environment, the working directory. Process group, signals and stdio are the
/// spawn's job.
pub fn build_launch(
    request: &ExecRequest,
    base: &BTreeMap<OsString, OsString>,
) -> Result<Launch, AgentError> {
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
    let path_var = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
    let (program, argv) = match &request.command {
        ExecCommand::Shell(line) => {
            let shell = find_shell(path_var);
            let argv = vec![shell.clone().into_os_string(), "-c".into(), line.into()];
            (shell, argv)
        }
        ExecCommand::Argv(argv) => {
            let Some(name) = argv.first() else {
                return Err(AgentError::new(ErrorCode::InvalidRequest, "argv is empty"));
            };
            let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
            (find_program(name, path_var), argv)
        }
    };
    let cwd = resolve_cwd(request.cwd.as_deref())?;
    Ok(Launch {
        program: c_string(program.into_os_string())?,
        argv: argv.into_iter().map(c_string).collect::<Result<_, _>>()?,
        envp: env
            .into_iter()
            .map(|(mut key, value)| {
                key.push("=");
                key.push(value);
                c_string(key)
            })
            .collect::<Result<_, _>>()?,
        cwd: c_string(cwd.into_os_string())?,
    })
}

/// What exec runs for a program name: a name with a `/` as it is, else the first
/// executable file of that name on `path_var` (`execvp`'s default path when unset), else
/// the bare name, for exec to refuse with `ENOENT`.
pub fn find_program(name: &str, path_var: Option<&OsStr>) -> PathBuf {
    if name.contains('/') || name.is_empty() {
        return PathBuf::from(name);
    }
    let paths = path_var.unwrap_or(OsStr::new("/bin:/usr/bin"));
    on_path(name, paths, |m| {
        m.is_file() && m.permissions().mode() & 0o111 != 0
    })
    .unwrap_or_else(|| PathBuf::from(name))
}

fn c_string(s: OsString) -> Result<CString, AgentError> {
    CString::new(s.into_vec())
        .map_err(|_| AgentError::new(ErrorCode::InvalidRequest, "the command contains a NUL byte"))
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
