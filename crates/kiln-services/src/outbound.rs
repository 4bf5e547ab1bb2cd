//! Connections the server makes to a URL a user gave (agent-job clones today; webhooks and
//! image pulls later): never to this machine or its private networks on a user's behalf.
//!
//! [`OutboundPolicy::vet`] resolves the URL's host *before* anything connects and refuses
//! it when any address it resolves to is internal ([`internal_kind`]: loopback, private,
//! link-local — cloud metadata lives there —, CGNAT, unspecified, multicast, broadcast,
//! reserved, and IPv6 forms embedding one of those), unless an administrator allowed the
//! host. The caller must then connect only to [`Vetted::addrs`] (for git:
//! [`Vetted::curl_resolve`]), so a second DNS answer cannot point elsewhere (DNS
//! rebinding), and must not follow redirects.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use url::{Host, Url};

/// How long resolving one host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a URL is refused. The messages never name what a host name resolved to: the
/// server's resolver must not become an oracle for internal names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("{0} is not an http(s) URL with a host")]
    NotHttp(String),
    /// The user wrote an internal address literally.
    #[error(
        "{host} is a {kind} address; this server does not connect to internal addresses on \
         a user's behalf (an administrator can allow a host in {allow_key})"
    )]
    InternalLiteral {
        host: String,
        kind: &'static str,
        allow_key: &'static str,
    },
    /// A name that does not resolve, or resolves to an internal address (not said which).
    #[error(
        "{host} does not resolve to a public address; this server does not connect to \
         internal addresses on a user's behalf (an administrator can allow a host in {allow_key})"
    )]
    NotPublic {
        host: String,
        allow_key: &'static str,
    },
}

/// A URL's destination, checked: connect to `addrs`, nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted {
    /// The host as the URL names it (`example.com`, `10.0.0.1`, `[::1]`).
    pub host: String,
    pub port: u16,
    /// The addresses that were checked (one for a literal; every address of a name, in
    /// the resolver's order, so a client may still fall back from one to the next).
    pub addrs: Vec<IpAddr>,
    /// Whether the host is a name (to be pinned) rather than an address literal.
    pub(crate) is_name: bool,
}

impl Vetted {
    /// curl's `CURLOPT_RESOLVE` entry (git: `http.curloptResolve`) pinning the host to the
    /// checked addresses; `None` for an address literal, which curl never resolves.
    pub fn curl_resolve(&self) -> Option<String> {
        if !self.is_name {
            return None;
        }
        let addrs: Vec<String> = self
            .addrs
            .iter()
            .map(|addr| match addr {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })
            .collect();
        Some(format!("{}:{}:{}", self.host, self.port, addrs.join(",")))
    }
}

/// Which internal hosts an administrator lets users' URLs reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// `host` (any port) or `host:port`, lower case, IPv6 in brackets.
    allowed: Vec<String>,
    /// The configuration key named in refusals.
    allow_key: &'static str,
}

impl OutboundPolicy {
    /// `allowed` entries are `host` or `host:port` as a URL writes them (`127.0.0.1:8123`,
    /// `git.internal`, `[::1]:80`; a bare IPv6 address is accepted too).
    pub fn new(allowed: &[String], allow_key: &'static str) -> Self {
        let allowed = allowed
            .iter()
            .map(|entry| {
                let entry = entry.trim().to_ascii_lowercase();
                match entry.parse::<Ipv6Addr>() {
                    Ok(v6) => format!("[{v6}]"),
                    Err(_) => entry,
                }
            })
            .filter(|entry| !entry.is_empty())
            .collect();
        Self { allowed, allow_key }
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        let with_port = format!("{host}:{port}");
        self.allowed.iter().any(|a| *a == host || *a == with_port)
    }

    /// Resolves `url`'s host and checks every address it has; see the module's doc.
    pub async fn vet(&self, url: &Url) -> Result<Vetted, OutboundError> {
        let not_http = || OutboundError::NotHttp(url.to_string());
        if !matches!(url.scheme(), "http" | "https") {
            return Err(not_http());
        }
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return Err(not_http());
        };
        let host_str = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self.allows(&host_str, port);
        let literal = |addr: IpAddr| match internal_kind(addr) {
            Some(kind) if !allowed => Err(OutboundError::InternalLiteral {
                host: host_str.clone(),
                kind,
                allow_key: self.allow_key,
            }),
            _ => Ok(Vetted {
                host: host_str.clone(),
                port,
                addrs: vec![addr],
                is_name: false,
            }),
        };
        let name = match host {
            Host::Ipv4(v4) => return literal(IpAddr::V4(v4)),
            Host::Ipv6(v6) => return literal(IpAddr::V6(v6)),
            Host::Domain(name) => name.to_string(),
        };
        let not_public = || OutboundError::NotPublic {
            host: host_str.clone(),
            allow_key: self.allow_key,
        };
        let addrs: Vec<IpAddr> = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((name, port)),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
            _ => return Err(not_public()),
        };
        // Every address must pass: a name with one public and one internal address would
        // otherwise reach the internal one whenever it came first.
        if addrs.is_empty() {
            return Err(not_public());
        }
        if !allowed && addrs.iter().any(|a| internal_kind(*a).is_some()) {
            return Err(not_public());
        }
        Ok(Vetted {
            host: host_str,
            port,
            addrs,
            is_name: true,
        })
    }
}

/// What kind of internal address `ip` is, or `None` for a public one.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    /// (network, prefix length, kind); metadata services (169.254.169.254, Alibaba's
    /// 100.100.100.200, Oracle's 192.0.0.192) fall in link-local, CGNAT and IETF ranges.
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\""),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    if ip.is_broadcast() {
        return Some("broadcast");
    }
    let bits = u32::from(ip);
    RANGES.iter().find_map(|(net, len, kind)| {
        let mask = u32::MAX << (32 - len);
        (bits & mask == u32::from_be_bytes(*net)).then_some(*kind)
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    const RANGES: &[(u128, u32, &str)] = &[
        (0xfc00 << 112, 7, "unique local (private)"),
        (0xfe80 << 112, 10, "link-local"),
        (0xfec0 << 112, 10, "site-local"),
        (0xff00 << 112, 8, "multicast"),
        (0x0100 << 112, 64, "discard-only"),
        (0x2001_0db8 << 96, 32, "documentation"),
    ];
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let bits = u128::from(ip);
    // Forms that carry an IPv4 address a packet may end up at: mapped (::ffff:a.b.c.d),
    // compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
    let embedded = if bits >> 32 == 0xffff || bits >> 32 == 0 || bits >> 32 == 0x64_ff9b << 64 {
        Some(Ipv4Addr::from(bits as u32))
    } else if bits >> 112 == 0x2002 {
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    };
    if let Some(v4) = embedded {
        return internal_v4(v4);
    }
    RANGES.iter().find_map(|(net, len, kind)| {
        let mask = u128::MAX << (128 - len);
        (bits & mask == *net).then_some(*kind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str) -> Option<&'static str> {
        internal_kind(ip.parse().expect("an address"))
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.100.100.200", "shared (CGNAT)"),
            ("0.0.0.0", "\"this network\""),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf:ffff::1", "link-local"),
            ("fc00::1", "unique local (private)"),
            ("fd00:ec2::254", "unique local (private)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "loopback"),
        ] {
            assert_eq!(kind(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.0.1",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).expect("a URL")
    }

    #[tokio::test]
    async fn internal_hosts_are_refused_unless_allowed() {
        let strict = OutboundPolicy::new(&[], "key");
        for refused in [
            "http://127.0.0.1:8123/x.git",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/x.git",
            "http://[::1]:8123/x.git",
            "http://[::ffff:127.0.0.1]:8123/x.git",
            "http://2130706433/x.git",
            "http://0x7f.1/x.git",
            "http://localhost:8123/x.git",
            "http://LOCALHOST./x.git",
            "http://kiln-does-not-exist.invalid/x.git",
        ] {
            assert!(strict.vet(&url(refused)).await.is_err(), "{refused}");
        }
        assert!(matches!(
            strict.vet(&url("ssh://example.com/x")).await,
            Err(OutboundError::NotHttp(_))
        ));

        let allowing = OutboundPolicy::new(
            &["127.0.0.1:8123".into(), "LocalHost".into(), "::1".into()],
            "key",
        );
        let ok = allowing
            .vet(&url("http://127.0.0.1:8123/x.git"))
            .await
            .expect("allowed");
        assert_eq!(ok.addrs, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(ok.curl_resolve(), None, "a literal needs no pin");
        assert!(allowing
            .vet(&url("http://127.0.0.1:8124/x.git"))
            .await
            .is_err());
        assert!(allowing.vet(&url("http://[::1]:9/x.git")).await.is_ok());
        let name = allowing
            .vet(&url("http://localhost:8123/x.git"))
            .await
            .expect("allowed name");
        assert!(name.addrs.iter().all(IpAddr::is_loopback), "{name:?}");
        let pin = name.curl_resolve().expect("a name is pinned");
        assert!(pin.starts_with("localhost:8123:"), "{pin}");
    }

    #[test]
    fn pins_have_curls_shape() {
        let v6 = Vetted {
            host: "git.example".into(),
            port: 443,
            addrs: vec![
                "2001:db8::1".parse().expect("addr"),
                "192.0.2.1".parse().expect("addr"),
            ],
            is_name: true,
        };
        assert_eq!(
            v6.curl_resolve().as_deref(),
            Some("git.example:443:[2001:db8::1],192.0.2.1")
        );
    }
}
