//! What a session may reach outside its sandbox (`[network]`, a sample's
//! `network_allowlist`). Nothing by default: the sandbox's network namespace has only
//! loopback. With an allowlist, the sandbox gets an egress (`kiln_runtime::Egress`):
//! HTTP and HTTPS proxies inside point at it, and [`proxy`] lets a connection through
//! only to a listed host and port that also passes the server's outbound rules
//! ([`crate::outbound`]). Refusals are answered at once (403, saying why) and kept per
//! session ([`EgressBook`]), so a command that needs the network shows it instead of
//! retrying for minutes.
pub mod proxy;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kiln_store::SampleRecord;

/// Entries one allowlist may have.
pub const MAX_RULES: usize = 64;
/// Refusals kept per session (the newest).
const MAX_BLOCKED_KEPT: usize = 100;
/// The record field naming a sample's own allowlist.
pub const RECORD_FIELD: &str = "network_allowlist";

/// One allowlist entry: a host (or `*.` and a domain: any name under it) and a port
/// (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostRule {
    /// `host`, `host:port`, `*.domain`, `*.domain:port`, `[v6]:port`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim().to_ascii_lowercase();
        let bad = || format!("{entry:?} is not host, host:port, *.domain or *.domain:port");
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (
                host.to_string(),
                Some(port.parse::<u16>().map_err(|_| bad())?),
            ),
            _ => (entry.clone(), None),
        };
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, host),
        };
        let plain = host.trim_start_matches('[').trim_end_matches(']');
        let ok = !plain.is_empty()
            && plain.len() <= 253
            && plain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !ok || port == Some(0) {
            return Err(bad());
        }
        Ok(HostRule {
            host: plain.to_string(),
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1)
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// The hosts a session may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    rules: Vec<HostRule>,
    /// As given, for people (`GET /v1/instances/{id}/network`).
    pub entries: Vec<String>,
}

impl NetworkPolicy {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} entries"));
        }
        let rules = entries
            .iter()
            .map(|e| HostRule::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetworkPolicy {
            rules,
            entries: entries.to_vec(),
        })
    }

    /// Whether `host` (lower case; an IPv6 address without brackets) and `port` are listed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.rules.iter().any(|r| r.matches(host, port))
    }
}

/// A sample's policy: its dataset's list (`network.datasets`) and its record's own
/// `network_allowlist`; `None` when neither names anything (no network at all).
pub fn policy_for(
    datasets: &BTreeMap<String, Vec<String>>,
    dataset: &str,
    record: &SampleRecord,
) -> Result<Option<NetworkPolicy>, String> {
    let mut entries = datasets.get(dataset).cloned().unwrap_or_default();
    match record.extra.get(RECORD_FIELD) {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                let entry = item
                    .as_str()
                    .ok_or_else(|| format!("{RECORD_FIELD} holds a non-string: {item}"))?;
                entries.push(entry.to_string());
            }
        }
        Some(other) => return Err(format!("{RECORD_FIELD} is not a list: {other}")),
    }
    if entries.is_empty() {
        return Ok(None);
    }
    NetworkPolicy::parse(&entries)
        .map(Some)
        .map_err(|e| format!("{RECORD_FIELD}: {e}"))
}

/// A connection the egress refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedConnection {
    pub host: String,
    pub port: u16,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// What a session's egress did, on this server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressRecord {
    /// Connections let through.
    pub connections: u64,
    /// Refusals, all of them.
    pub blocked_total: u64,
    /// The newest refusals, oldest first.
    pub blocked: VecDeque<BlockedConnection>,
}

/// Every session's [`EgressRecord`], kept while the session lives.
#[derive(Default)]
pub struct EgressBook(Mutex<HashMap<String, EgressRecord>>);

impl EgressBook {
    fn with<T>(&self, session_id: &str, f: impl FnOnce(&mut EgressRecord) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(session_id.to_string()).or_default())
    }

    pub fn connected(&self, session_id: &str) {
        self.with(session_id, |r| r.connections += 1);
    }

    pub fn blocked(&self, session_id: &str, host: &str, port: u16, reason: &str) {
        // Debug, not info: what an agent's code tries must not flood the server's log.
        tracing::debug!(session = session_id, host, port, reason, "egress refused");
        self.with(session_id, |r| {
            r.blocked_total += 1;
            if r.blocked.len() == MAX_BLOCKED_KEPT {
                r.blocked.pop_front();
            }
            r.blocked.push_back(BlockedConnection {
                host: host.to_string(),
                port,
                reason: reason.to_string(),
                at: Utc::now(),
            });
        });
    }

    pub fn get(&self, session_id: &str) -> EgressRecord {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(session_id).cloned().unwrap_or_default()
    }

    pub fn forget(&self, session_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> NetworkPolicy {
        NetworkPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn rules_match_hosts_ports_and_subdomains() {
        let p = policy(&[
            "pypi.org:443",
            "*.pythonhosted.org",
            "127.0.0.2:8080",
            "[::1]:80",
        ]);
        assert!(p.allows("pypi.org", 443));
        assert!(!p.allows("pypi.org", 80));
        assert!(!p.allows("evil-pypi.org", 443));
        assert!(p.allows("files.pythonhosted.org", 443));
        assert!(p.allows("a.b.pythonhosted.org", 8443));
        assert!(
            !p.allows("pythonhosted.org", 443),
            "the wildcard is for names under it"
        );
        assert!(!p.allows("xpythonhosted.org", 443));
        assert!(p.allows("127.0.0.2", 8080));
        assert!(!p.allows("127.0.0.3", 8080));
        assert!(p.allows("::1", 80));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["", "host:0", "host:99999", "ho st", "*.", "a/b:80"] {
            let err = NetworkPolicy::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("is not host"), "{bad}: {err}");
        }
        let many: Vec<String> = (0..=MAX_RULES).map(|i| format!("h{i}.example")).collect();
        assert!(NetworkPolicy::parse(&many).is_err());
    }

    #[test]
    fn a_samples_list_adds_to_its_datasets() {
        let mut record = SampleRecord::default();
        let datasets = BTreeMap::from([("swe".to_string(), vec!["pypi.org:443".to_string()])]);
        assert_eq!(policy_for(&BTreeMap::new(), "swe", &record).unwrap(), None);
        let from_dataset = policy_for(&datasets, "swe", &record).unwrap().unwrap();
        assert!(from_dataset.allows("pypi.org", 443));
        record
            .extra
            .insert(RECORD_FIELD.into(), serde_json::json!(["data.example:443"]));
        let both = policy_for(&datasets, "swe", &record).unwrap().unwrap();
        assert!(both.allows("pypi.org", 443) && both.allows("data.example", 443));
        record
            .extra
            .insert(RECORD_FIELD.into(), serde_json::json!("pypi.org"));
        assert!(policy_for(&datasets, "swe", &record).is_err());
    }

    #[test]
    fn the_book_keeps_the_newest_refusals() {
        let book = EgressBook::default();
        book.connected("s");
        for i in 0..(MAX_BLOCKED_KEPT + 5) {
            book.blocked("s", &format!("h{i}"), 443, "not listed");
        }
        let record = book.get("s");
        assert_eq!(record.connections, 1);
        assert_eq!(record.blocked_total, (MAX_BLOCKED_KEPT + 5) as u64);
        assert_eq!(record.blocked.len(), MAX_BLOCKED_KEPT);
        assert_eq!(record.blocked[0].host, "h5");
        book.forget("s");
        assert_eq!(book.get("s"), EgressRecord::default());
    }
}
