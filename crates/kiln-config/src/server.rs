//! `[server]`: how the HTTP server holds against slow, idle, greedy or hostile clients.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Time a client has to send a complete request head, counted from the connection's
    /// start and, on a kept-alive connection, from the end of the previous response (so
    /// it also closes idle keep-alive connections). 1–300.
    pub header_read_timeout_secs: u64,
    /// A connection on which no byte moves either way for this long is closed (a stalled
    /// upload, a client that stopped reading its response). More than
    /// `sessions.long_poll_secs`, which is silent by design; at most 86400.
    pub idle_timeout_secs: u64,
    /// Open client connections in total; those over it are closed at once. At start the
    /// server also keeps it under half of its file descriptor limit. 1–1000000.
    pub max_connections: usize,
    /// Open connections per client address (IPv6: per /64). 1–`max_connections`.
    pub max_connections_per_ip: usize,
    /// Sustained requests per second per API key (or per user, for access tokens) on
    /// authenticated requests; over it, 429 with `Retry-After`. 0 turns it off.
    pub key_requests_per_sec: u32,
    /// Requests one key may send at once above the sustained rate (≥ 1).
    pub key_burst: u32,
    /// Sustained requests per second per client address on requests without a valid
    /// credential (sign-in, refresh, failed authentication; `/health` is exempt). 0 turns
    /// it off.
    pub ip_requests_per_sec: u32,
    /// Burst of the per-address rate (≥ 1).
    pub ip_burst: u32,
    /// Reverse proxies (addresses or CIDR blocks, e.g. `["127.0.0.1", "10.0.0.0/8"]`)
    /// whose `X-Forwarded-For` names the real client. Requests from them are rate
    /// limited by that client's address, and their connections count only against
    /// `max_connections`, not the per-address cap. Empty (the default): the header is
    /// ignored, so a client cannot pick the address it is limited by. At most 64.
    #[serde(deserialize_with = "addresses_or_blocks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Bearer token `GET /metrics` (Prometheus) requires. Unset: `/metrics` answers only
    /// clients connecting from a loopback address (others get 404); behind a reverse proxy
    /// on the same host, set a token, since every request then comes from loopback.
    pub metrics_token: Option<Secret>,
    /// PEM certificate chain (the server's certificate first) that `kiln serve` presents.
    /// Set together with `tls_key_file`: the listener then speaks HTTPS only (TLS 1.2 and
    /// 1.3, ALPN `http/1.1`). Read at start; a file that cannot be read or parsed stops
    /// the start.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: Option<PathBuf>,
}

/// `"10.0.0.0/8"` or a bare address (`"127.0.0.1"`, a block of one).
fn addresses_or_blocks<'de, D>(deserializer: D) -> Result<Vec<ipnet::IpNet>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let items = Vec::<String>::deserialize(deserializer)?;
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{item:?} is neither an IP address nor a CIDR block"
                    ))
                })
        })
        .collect()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            idle_timeout_secs: 120,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            key_requests_per_sec: 2_000,
            key_burst: 4_000,
            ip_requests_per_sec: 100,
            ip_burst: 200,
            trusted_proxies: Vec::new(),
            metrics_token: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ServerConfig {
    pub(crate) fn check(&self, long_poll_secs: u64) -> Result<(), ConfigError> {
        let rule = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Rule(format!("server.{what}")))
            }
        };
        rule(
            (1..=300).contains(&self.header_read_timeout_secs),
            "header_read_timeout_secs must be between 1 and 300",
        )?;
        rule(
            self.idle_timeout_secs > long_poll_secs && self.idle_timeout_secs <= 86_400,
            "idle_timeout_secs must be more than sessions.long_poll_secs and at most 86400",
        )?;
        rule(
            (1..=1_000_000).contains(&self.max_connections),
            "max_connections must be between 1 and 1000000",
        )?;
        rule(
            (1..=self.max_connections).contains(&self.max_connections_per_ip),
            "max_connections_per_ip must be between 1 and max_connections",
        )?;
        for (name, rate, burst) in [
            ("key", self.key_requests_per_sec, self.key_burst),
            ("ip", self.ip_requests_per_sec, self.ip_burst),
        ] {
            rule(
                rate <= 1_000_000 && (1..=1_000_000).contains(&burst),
                &format!(
                    "{name}_requests_per_sec must be at most 1000000 and {name}_burst between 1 and 1000000"
                ),
            )?;
        }
        rule(
            self.metrics_token
                .as_ref()
                .is_none_or(|t| t.expose().len() >= 16),
            "metrics_token must be at least 16 characters",
        )?;
        rule(
            self.trusted_proxies.len() <= 64,
            "trusted_proxies may name at most 64 addresses or blocks",
        )?;
        // A certificate without its key (or the reverse) is a half-done set-up: serving
        // plain HTTP instead would hide it, so it is refused by name.
        rule(
            self.tls_cert_file.is_some() || self.tls_key_file.is_none(),
            "tls_cert_file is missing: tls_key_file is set, and HTTPS needs both",
        )?;
        rule(
            self.tls_key_file.is_some() || self.tls_cert_file.is_none(),
            "tls_key_file is missing: tls_cert_file is set, and HTTPS needs both",
        )
    }

    /// Whether the listener speaks HTTPS (both TLS files are set).
    pub fn tls(&self) -> bool {
        self.tls_cert_file.is_some() && self.tls_key_file.is_some()
    }

    /// Whether `ip` is one of the trusted reverse proxies.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use crate::{Config, Overrides};

    #[test]
    fn server_section_reads_the_environment_and_checks_bounds() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.server.header_read_timeout_secs, 10);
            assert_eq!(config.server.max_connections, 10_000);
            jail.set_env("KILN_SERVER__MAX_CONNECTIONS_PER_IP", "7");
            jail.set_env("KILN_SERVER__KEY_REQUESTS_PER_SEC", "0");
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert_eq!(config.server.max_connections_per_ip, 7);
            assert_eq!(config.server.key_requests_per_sec, 0);
            for (key, bad) in [
                ("HEADER_READ_TIMEOUT_SECS", "0"),
                ("MAX_CONNECTIONS_PER_IP", "10001"),
                ("IP_BURST", "0"),
                ("IDLE_TIMEOUT_SECS", "20"), // not above the default long poll (20 s)
            ] {
                jail.set_env(format!("KILN_SERVER__{key}"), bad);
                let err = Config::load(None, &Overrides::default()).unwrap_err();
                assert!(err.to_string().contains("server."), "{key}: {err}");
                jail.set_env("KILN_SERVER__MAX_CONNECTIONS_PER_IP", "7");
                jail.set_env("KILN_SERVER__HEADER_READ_TIMEOUT_SECS", "10");
                jail.set_env("KILN_SERVER__IP_BURST", "1");
                jail.set_env("KILN_SERVER__IDLE_TIMEOUT_SECS", "21");
            }
            Config::load(None, &Overrides::default()).expect("loads again");
            jail.set_env(
                "KILN_SERVER__TRUSTED_PROXIES",
                r#"["127.0.0.1", "10.0.0.0/8"]"#,
            );
            let config = Config::load(None, &Overrides::default()).expect("loads proxies");
            assert!(config
                .server
                .is_trusted_proxy("127.0.0.1".parse().expect("ip")));
            assert!(config
                .server
                .is_trusted_proxy("::ffff:10.1.2.3".parse().expect("ip")));
            assert!(!config
                .server
                .is_trusted_proxy("127.0.0.2".parse().expect("ip")));
            jail.set_env("KILN_SERVER__TRUSTED_PROXIES", r#"["not-an-address"]"#);
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("not-an-address"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn tls_needs_both_files_and_names_the_missing_one() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None, &Overrides::default()).expect("loads");
            assert!(!config.server.tls(), "plain HTTP by default");
            jail.set_env("KILN_SERVER__TLS_CERT_FILE", "/etc/kiln/node.pem");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("server.tls_key_file is missing"),
                "{err}"
            );
            jail.set_env("KILN_SERVER__TLS_KEY_FILE", "/etc/kiln/node.key");
            let config = Config::load(None, &Overrides::default()).expect("both set");
            assert!(config.server.tls());
            assert_eq!(
                config.server.tls_key_file.as_deref(),
                Some(std::path::Path::new("/etc/kiln/node.key"))
            );
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("KILN_SERVER__TLS_KEY_FILE", "/etc/kiln/node.key");
            let err = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("server.tls_cert_file is missing"),
                "{err}"
            );
            Ok(())
        });
    }
}
