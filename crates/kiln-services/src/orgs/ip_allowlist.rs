//! An organization's IP allowlist: the networks its API keys may be used from. Empty means
//! anywhere. Only org keys are bound (a member's sign-in is the person's, not the org's, so
//! an admin can always fix a wrong list from a browser). Owners and admins manage it;
//! every change is audited.
use std::net::IpAddr;

use chrono::Utc;
use ipnet::IpNet;
use kiln_store::{IpAllowEntry, KeyOrg};

use super::OrgService;
use crate::accounts::ClientInfo;
use crate::auth::{Credential, Principal};
use crate::error::{FieldError, ServiceError, ServiceResult};
use crate::ids::new_id;

const MAX_NOTE_CHARS: usize = 200;

/// One network as a caller gives it: a CIDR or a single address.
#[derive(Debug, Clone)]
pub struct AllowInput {
    pub cidr: String,
    pub note: Option<String>,
}

/// The canonical network of `text` (`10.1.2.3/8` → `10.0.0.0/8`; an address alone is a
/// /32 or /128), or `None`.
fn canonical(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Some(net.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Checks every input (all faults reported at once, FastAPI style) and removes repeats.
fn parse_inputs(inputs: &[AllowInput], loc: &[&str]) -> ServiceResult<Vec<(IpNet, String)>> {
    let mut faults = Vec::new();
    let mut nets: Vec<(IpNet, String)> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.iter().enumerate() {
        let index = i.to_string();
        let at = |field: &str| {
            let mut path: Vec<&str> = loc.to_vec();
            if !loc.is_empty() {
                path.push(&index);
            }
            path.push(field);
            path.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let note = input.note.clone().unwrap_or_default();
        if note.chars().count() > MAX_NOTE_CHARS {
            faults.push(FieldError {
                field: at("note"),
                msg: format!("String should have at most {MAX_NOTE_CHARS} characters"),
                kind: "string_too_long".into(),
            });
        }
        match canonical(&input.cidr) {
            Some(net) if !nets.iter().any(|(n, _)| *n == net) => nets.push((net, note)),
            Some(_) => {}
            None => faults.push(FieldError {
                field: at("cidr"),
                msg: "value is not a valid IP network (e.g. 203.0.113.0/24 or 2001:db8::/32)"
                    .into(),
                kind: "value_error".into(),
            }),
        }
    }
    if faults.is_empty() {
        Ok(nets)
    } else {
        Err(ServiceError::Validation(faults))
    }
}

/// Whether `address` (as the HTTP edge saw the client) is inside one of `cidrs`.
fn allowed(cidrs: &[String], address: &str) -> bool {
    let Ok(ip) = address.parse::<IpAddr>() else {
        return false;
    };
    let ip = ip.to_canonical();
    cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|net| net.contains(&ip))
}

impl OrgService {
    /// The org's allowlist (owners and admins).
    pub async fn ip_allowlist(
        &self,
        caller: &Principal,
        org: &str,
    ) -> ServiceResult<Vec<IpAllowEntry>> {
        let ctx = self.manager_context(caller, org).await?;
        Ok(self.store.list_ip_allowlist(&ctx.org.org_id).await?)
    }

    /// Replaces the whole list (an empty one lets the org's keys in from anywhere).
    pub async fn set_ip_allowlist(
        &self,
        caller: &Principal,
        org: &str,
        inputs: &[AllowInput],
        client: &ClientInfo,
    ) -> ServiceResult<Vec<IpAllowEntry>> {
        let ctx = self.manager_context(caller, org).await?;
        let max = self.config.max_ip_allowlist_entries as usize;
        if inputs.len() > max {
            return Err(ServiceError::invalid(
                &["entries"],
                format!(
                    "List should have at most {max} items after validation, not {}",
                    inputs.len()
                ),
                "too_long",
            ));
        }
        let nets = parse_inputs(inputs, &["entries"])?;
        let now = Utc::now();
        let entries: Vec<IpAllowEntry> = nets
            .into_iter()
            .map(|(net, note)| IpAllowEntry {
                entry_id: new_id("ipa"),
                org_id: ctx.org.org_id.clone(),
                cidr: net.to_string(),
                note,
                created_by: Some(caller.user.user_id.clone()),
                created_at: now,
            })
            .collect();
        self.store
            .replace_ip_allowlist(&ctx.org.org_id, &entries)
            .await?;
        let cidrs: Vec<&str> = entries.iter().map(|e| e.cidr.as_str()).collect();
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "org.ip_allowlist_set",
            None,
            client,
            Some(serde_json::json!({ "cidrs": cidrs })),
        )
        .await?;
        Ok(self.store.list_ip_allowlist(&ctx.org.org_id).await?)
    }

    /// Adds one network; 409 when it is listed, 429 past `orgs.max_ip_allowlist_entries`.
    pub async fn add_ip_allow_entry(
        &self,
        caller: &Principal,
        org: &str,
        input: &AllowInput,
        client: &ClientInfo,
    ) -> ServiceResult<IpAllowEntry> {
        let ctx = self.manager_context(caller, org).await?;
        let nets = parse_inputs(std::slice::from_ref(input), &[])?;
        let Some((net, note)) = nets.into_iter().next() else {
            return Err(ServiceError::Internal("a parsed entry vanished".into()));
        };
        let entry = IpAllowEntry {
            entry_id: new_id("ipa"),
            org_id: ctx.org.org_id.clone(),
            cidr: net.to_string(),
            note,
            created_by: Some(caller.user.user_id.clone()),
            created_at: Utc::now(),
        };
        let max = self.config.max_ip_allowlist_entries;
        match self.store.add_ip_allow_entry(&entry, max).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ServiceError::LimitExceeded(format!(
                    "this organization's IP allowlist has {max} entries (the limit)"
                )))
            }
            Err(kiln_store::StoreError::Conflict(_)) => {
                return Err(ServiceError::Conflict(format!(
                    "{} is already in the allowlist",
                    entry.cidr
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "org.ip_allowlist_added",
            Some(&entry.entry_id),
            client,
            Some(serde_json::json!({ "cidr": entry.cidr })),
        )
        .await?;
        Ok(entry)
    }

    pub async fn remove_ip_allow_entry(
        &self,
        caller: &Principal,
        org: &str,
        entry_id: &str,
        client: &ClientInfo,
    ) -> ServiceResult<()> {
        let ctx = self.manager_context(caller, org).await?;
        if !self
            .store
            .delete_ip_allow_entry(&ctx.org.org_id, entry_id)
            .await?
        {
            return Err(ServiceError::not_found(format!(
                "allowlist entry {entry_id:?}"
            )));
        }
        self.record(
            caller,
            Some(&ctx.org.org_id),
            "org.ip_allowlist_removed",
            Some(entry_id),
            client,
            None,
        )
        .await
    }

    /// 403 `ip_not_allowed` when an org API key is used from outside its org's allowlist.
    /// Authentication read whether the key's org has a list; only then is it read (other
    /// credentials, personal keys and keys of orgs without a list are not bound).
    pub async fn check_key_address(&self, caller: &Principal, address: &str) -> ServiceResult<()> {
        let Credential::ApiKey {
            key_id,
            org: Some(KeyOrg {
                restricted: true, ..
            }),
            ..
        } = &caller.via
        else {
            return Ok(());
        };
        let Some(list) = self.store.key_allowlist(key_id).await? else {
            return Ok(());
        };
        if list.cidrs.is_empty() || allowed(&list.cidrs, address) {
            return Ok(());
        }
        Err(ServiceError::Denied {
            code: "ip_not_allowed",
            message: format!(
                "this organization's API keys may not be used from {address}; an owner or \
                 admin can change its IP allowlist"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_canonical_and_matched() {
        assert_eq!(
            canonical("10.1.2.3/8").map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            canonical(" 127.0.0.2 ").map(|n| n.to_string()),
            Some("127.0.0.2/32".into())
        );
        assert_eq!(
            canonical("2001:db8::1/32").map(|n| n.to_string()),
            Some("2001:db8::/32".into())
        );
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0/8", "1.2.3.4/-1"] {
            assert!(canonical(bad).is_none(), "{bad}");
        }
        let list = vec!["127.0.0.2/32".to_string(), "10.0.0.0/8".to_string()];
        assert!(allowed(&list, "127.0.0.2"));
        assert!(allowed(&list, "::ffff:10.9.8.7"));
        assert!(!allowed(&list, "127.0.0.3"));
        assert!(!allowed(&list, ""));
    }

    #[test]
    fn every_bad_entry_is_reported_and_repeats_dropped() {
        let input = |c: &str| AllowInput {
            cidr: c.into(),
            note: None,
        };
        let nets =
            parse_inputs(&[input("10.0.0.1/8"), input("10.0.0.0/8")], &["entries"]).expect("valid");
        assert_eq!(nets.len(), 1);
        let Err(ServiceError::Validation(faults)) = parse_inputs(
            &[input("nope"), input("1.2.3.4"), input("300.1.1.1")],
            &["entries"],
        ) else {
            panic!("invalid entries pass");
        };
        let fields: Vec<_> = faults.iter().map(|f| f.field.join(".")).collect();
        assert_eq!(fields, ["entries.0.cidr", "entries.2.cidr"]);
    }
}
