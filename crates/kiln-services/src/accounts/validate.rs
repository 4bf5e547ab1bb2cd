//! Checks of what a caller sends, as 422 field errors.
use kiln_config::AccountsConfig;

use crate::error::{ServiceError, ServiceResult};

/// RFC 5321's limit on a forward path.
const MAX_EMAIL: usize = 254;
const MAX_NAME: usize = 100;

/// A trimmed address with one `@`, a local part and a dotted domain, no spaces or controls.
/// (Whether it receives mail is what the verification link proves.)
pub(crate) fn email(raw: &str, field: &[&str]) -> ServiceResult<String> {
    let email = raw.trim();
    let bad = |msg: &str| Err(ServiceError::invalid(field, msg, "value_error"));
    if email.len() > MAX_EMAIL {
        return Err(ServiceError::invalid(
            field,
            format!("String should have at most {MAX_EMAIL} characters"),
            "string_too_long",
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return bad("value is not a valid email address: it has no @");
    };
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("value is not a valid email address");
    }
    Ok(email.to_string())
}

pub(crate) fn name(raw: &str) -> ServiceResult<String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ServiceError::invalid(
            &["name"],
            "String should have at least 1 character",
            "string_too_short",
        ));
    }
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            &["name"],
            format!("String should have at most {MAX_NAME} characters and no control characters"),
            "string_too_long",
        ));
    }
    Ok(name.to_string())
}

pub(crate) fn password(raw: &str, config: &AccountsConfig, field: &[&str]) -> ServiceResult<()> {
    let n = raw.chars().count();
    if n < config.min_password_chars {
        return Err(ServiceError::invalid(
            field,
            format!(
                "String should have at least {} characters",
                config.min_password_chars
            ),
            "string_too_short",
        ));
    }
    if n > config.max_password_chars {
        return Err(ServiceError::invalid(
            field,
            format!(
                "String should have at most {} characters",
                config.max_password_chars
            ),
            "string_too_long",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(email(" A@b.co ", &["e"]).expect("ok"), "A@b.co");
        for bad in [
            "", "ab.co", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@.co", "a@co.",
        ] {
            assert!(email(bad, &["e"]).is_err(), "{bad:?}");
        }
        assert!(email(&format!("{}@b.co", "a".repeat(260)), &["e"]).is_err());
    }

    #[test]
    fn passwords_have_bounds() {
        let c = AccountsConfig::default();
        assert!(password("short", &c, &["p"]).is_err());
        assert!(password("long enough", &c, &["p"]).is_ok());
        assert!(password(&"x".repeat(257), &c, &["p"]).is_err());
    }
}
