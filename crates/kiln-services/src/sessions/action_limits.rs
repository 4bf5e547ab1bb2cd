//! The limits on what an interaction asks, checked here for every caller (the HTTP layer
//! adds only what its own encoding needs). Errors name the field only; the messages are
//! the ones the API has always given, so its 422 bodies stay as they were.
use kiln_config::SessionsConfig;

use super::Action;
use crate::error::{ServiceError, ServiceResult};

impl Action {
    /// What no sandbox can take, whoever asks: a NUL cannot be part of a program's
    /// argument or of a path; and a command within the server's limits.
    pub(super) fn check(&self, config: &SessionsConfig) -> ServiceResult<()> {
        match self {
            Action::Exec {
                command,
                timeout_secs,
            } => check_command(command, *timeout_secs, config),
            Action::StrReplace { path, .. } | Action::Upload { path, .. } => {
                if path.contains('\0') {
                    return Err(ServiceError::invalid(
                        &["file_path"],
                        "Value error, the file_path contains a NUL character (\\u0000), which no program argument or path can hold",
                        "value_error",
                    ));
                }
                Ok(())
            }
        }
    }
}

fn check_command(command: &str, timeout_secs: u32, config: &SessionsConfig) -> ServiceResult<()> {
    let bad = |msg: String, kind: &str| Err(ServiceError::invalid(&["command"], msg, kind));
    if command.trim().is_empty() {
        return bad("the command is empty".into(), "string_too_short");
    }
    if command.contains('\0') {
        return bad(
            "Value error, the command contains a NUL character (\\u0000), which no program argument can hold".into(),
            "value_error",
        );
    }
    if command.len() > config.max_command_bytes {
        return bad(
            format!(
                "String should have at most {} bytes",
                config.max_command_bytes
            ),
            "string_too_long",
        );
    }
    let max = config.max_command_timeout_secs;
    if timeout_secs == 0 {
        return Err(ServiceError::invalid(
            &["command_timeout"],
            "Input should be greater than or equal to 1",
            "greater_than_equal",
        ));
    }
    if timeout_secs > max {
        return Err(ServiceError::invalid(
            &["command_timeout"],
            format!("Input should be less than or equal to {max}"),
            "less_than_equal",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    fn refused(action: Action, config: &SessionsConfig) -> Option<FieldError> {
        match action.check(config) {
            Ok(()) => None,
            Err(ServiceError::Validation(mut errors)) => errors.pop(),
            Err(other) => panic!("not a validation error: {other}"),
        }
    }

    fn exec(command: &str, timeout_secs: u32) -> Action {
        Action::Exec {
            command: command.into(),
            timeout_secs,
        }
    }

    #[test]
    fn commands_are_held_to_the_server_limits_whoever_asks() {
        let config = SessionsConfig {
            max_command_bytes: 8,
            max_command_timeout_secs: 60,
            ..SessionsConfig::default()
        };
        assert_eq!(refused(exec("true", 60), &config), None);
        let cases = [
            (exec("  ", 1), "command", "string_too_short"),
            (exec("a\0b", 1), "command", "value_error"),
            (exec("123456789", 1), "command", "string_too_long"),
            (exec("true", 0), "command_timeout", "greater_than_equal"),
            (exec("true", 61), "command_timeout", "less_than_equal"),
        ];
        for (action, field, kind) in cases {
            let error = refused(action, &config).expect("refused");
            assert_eq!(
                (error.field, error.kind.as_str()),
                (vec![field.to_string()], kind)
            );
        }
        let upload = Action::Upload {
            path: "/a\0b".into(),
            content: Vec::new(),
            executable: false,
        };
        assert_eq!(
            refused(upload, &config).map(|e| e.field),
            Some(vec!["file_path".to_string()])
        );
    }
}
