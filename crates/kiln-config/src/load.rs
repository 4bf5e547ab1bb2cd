//! Reading the layers (defaults → TOML file → `KILN_*` environment → flags) and the
//! checks run on the result.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;

use crate::{Config, ConfigError};

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// The top-level settings, as named in the file and (upper-cased) in the environment:
/// read off the type itself, so a new setting cannot be forgotten here.
fn setting_names() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Reads the layers. `file` is the `--config` / `KILN_CONFIG` path, if any: a named
    /// file that does not exist is an error, not a silent default.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(figment, Env::prefixed("KILN_").split("__"), overrides)
    }

    fn from_figment(
        figment: Figment,
        env: Env,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        // Only variables that name a setting are read: others share the prefix
        // (KILN_CONFIG names the file; tests and scripts have their own KILN_* variables)
        // and must not trip `deny_unknown_fields`.
        let settings = setting_names();
        let env = env.filter(move |key| {
            let key = key.as_str();
            settings.iter().any(|name| {
                key.eq_ignore_ascii_case(name)
                    || (key.len() > name.len()
                        && key[..name.len()].eq_ignore_ascii_case(name)
                        && (key[name.len()..].starts_with("__")
                            || key[name.len()..].starts_with('.')))
            })
        });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.check()?;
        Ok(config)
    }
    fn check(&self) -> Result<(), ConfigError> {
        // Area by area, in the order the checks always ran.
        self.auth.check()?;
        self.sessions.check()?;
        self.runtime.check()?;
        self.billing.check()?;
        self.agent_jobs.check()?;
        self.github.check()?;
        self.exec.check()?;
        self.network.check()?;
        self.server.check(self.sessions.long_poll_secs)?;
        self.limits.check()?;
        self.files.check()?;
        self.webhooks.check()?;
        self.eval.check()?;
        self.ports.check()?;
        self.snapshots.check()?;
        self.base_images.check()?;
        self.mcp.check()?;
        self.accounts.check()?;
        self.mail.check()?;
        self.cluster.check()?;
        self.orgs.check()?;
        self.telemetry.check()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "kiln.toml",
                "listen = \"127.0.0.1:9000\"\n[auth]\naccess_token_ttl_secs = 60\n",
            )?;
            jail.set_env("KILN_AUTH__ACCESS_TOKEN_TTL_SECS", "120");
            jail.set_env("KILN_DATA_DIR", "/var/lib/kiln");
            jail.set_env("KILN_TEST_SOMETHING_ELSE", "ignored");
            jail.set_env("KILN_IMAGES_DIR", "/srv/images");
            jail.set_env("KILN_SESSIONS__LONG_POLL_SECS", "3");
            let config =
                Config::load(Some(Path::new("kiln.toml")), &Overrides::default()).expect("loads");
            assert_eq!(config.listen, "127.0.0.1:9000".parse().expect("addr"));
            assert_eq!(config.auth.access_token_ttl_secs, 120, "env beats file");
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/kiln"));
            assert_eq!(config.images_dir(), PathBuf::from("/srv/images"));
            assert_eq!(config.sessions.long_poll_secs, 3);

            let overrides = Overrides {
                data_dir: Some("/tmp/x".into()),
                listen: None,
            };
            let config = Config::load(Some(Path::new("kiln.toml")), &overrides).expect("loads");
            assert_eq!(config.data_dir, PathBuf::from("/tmp/x"), "flags beat env");
            Ok(())
        });
    }

    #[test]
    fn missing_file_and_unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            let err =
                Config::load(Some(Path::new("nope.toml")), &Overrides::default()).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)));
            jail.create_file("bad.toml", "lisen = \"127.0.0.1:1\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }
}
