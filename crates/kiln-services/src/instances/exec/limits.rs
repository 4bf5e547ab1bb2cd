//! What an exec request may ask (`[exec]`): checked before anything runs.
use std::collections::BTreeMap;

use kiln_config::ExecConfig;
use kiln_protocol::{Binary, ExecRequest};

use super::{ExecCommand, ExecSpec};
use crate::error::{ServiceError, ServiceResult};

const MAX_CWD_BYTES: usize = 4096;

/// The agent's request for `spec`, or what is wrong with it, field by field.
pub(super) fn exec_request(
    limits: &ExecConfig,
    max_output_bytes: usize,
    spec: &ExecSpec,
) -> ServiceResult<ExecRequest> {
    let mut request = match &spec.command {
        ExecCommand::Shell(command) => {
            check_text(&["command"], command, limits.max_command_bytes)?;
            ExecRequest::shell(command.clone())
        }
        ExecCommand::Argv(argv) => {
            if argv.is_empty() || argv.len() > limits.max_argv_items {
                return Err(ServiceError::invalid(
                    &["argv"],
                    format!("argv must have 1 to {} items", limits.max_argv_items),
                    "value_error",
                ));
            }
            let total: usize = argv.iter().map(|a| a.len() + 1).sum();
            if total > limits.max_command_bytes || argv.iter().any(|a| a.contains('\0')) {
                return Err(ServiceError::invalid(
                    &["argv"],
                    format!(
                        "argv must be at most {} bytes in all, without NUL",
                        limits.max_command_bytes
                    ),
                    "value_error",
                ));
            }
            if argv[0].is_empty() {
                return Err(ServiceError::invalid(
                    &["argv", "0"],
                    "the program must not be empty",
                    "value_error",
                ));
            }
            ExecRequest::argv(argv.clone())
        }
    };
    let timeout = spec.timeout_secs.unwrap_or(limits.default_timeout_secs);
    if timeout == 0 || timeout > limits.max_timeout_secs {
        return Err(ServiceError::invalid(
            &["timeout_secs"],
            format!(
                "Input should be between 1 and {} (seconds)",
                limits.max_timeout_secs
            ),
            "less_than_equal",
        ));
    }
    request.timeout_ms = u64::from(timeout) * 1000;
    request.max_output_bytes = max_output_bytes as u64;
    if let Some(cwd) = &spec.cwd {
        check_text(&["cwd"], cwd, MAX_CWD_BYTES)?;
        request.cwd = Some(cwd.clone());
    }
    check_env(&spec.env, limits)?;
    request.env = spec.env.clone();
    if let Some(stdin) = &spec.stdin {
        if stdin.len() > limits.max_stdin_bytes {
            return Err(ServiceError::invalid(
                &["stdin"],
                format!("stdin must be at most {} bytes", limits.max_stdin_bytes),
                "value_error",
            ));
        }
        request.stdin = Some(Binary(stdin.clone()));
    }
    Ok(request)
}

fn check_text(field: &[&str], text: &str, max: usize) -> ServiceResult<()> {
    if text.is_empty() || text.len() > max || text.contains('\0') {
        return Err(ServiceError::invalid(
            field,
            format!("must be 1 to {max} bytes, without NUL"),
            "value_error",
        ));
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>, limits: &ExecConfig) -> ServiceResult<()> {
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if env.len() > limits.max_env_vars || total > limits.max_env_bytes {
        return Err(ServiceError::invalid(
            &["env"],
            format!(
                "at most {} variables and {} bytes in all",
                limits.max_env_vars, limits.max_env_bytes
            ),
            "value_error",
        ));
    }
    for (name, value) in env {
        let bad_name = name.is_empty() || name.contains(['=', '\0']);
        if bad_name || value.contains('\0') {
            return Err(ServiceError::invalid(
                &["env", name.as_str()],
                "a name is non-empty without '=' or NUL; a value has no NUL",
                "value_error",
            ));
        }
    }
    Ok(())
}
