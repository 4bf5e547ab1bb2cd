//! Instances themselves: create (from an image or a sample), get, list, change, delete.
//! An instance is a session: creation goes through [`SessionService::create`] (balance,
//! live-session limit, admission, billing), reads and the close through the same service,
//! so a Codeset session is an instance and an instance is a session.
use chrono::Duration;
use kiln_config::InstancesConfig;
use kiln_store::{
    Labels, SessionChange, SessionCursor, SessionFilter, SessionLimits, SessionRecord,
    SessionStatus,
};

use super::InstanceService;
use crate::error::{FieldError, ServiceError, ServiceResult};
use crate::sessions::{CreateSession, NewSource};

/// What an instance is made from, as asked.
#[derive(Debug, Clone)]
pub enum InstanceSource {
    /// An image in the server's image store.
    Image(String),
    /// The latest version of a dataset's sample.
    Sample { dataset: String, sample_id: String },
}

/// Resources asked for; each `None` is the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceRequest {
    /// Cores (0.5 is half a core).
    pub cpu: Option<f64>,
    pub memory_mib: Option<u64>,
    pub disk_mib: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub source: InstanceSource,
    pub name: Option<String>,
    pub labels: Labels,
    pub ttl_minutes: Option<i64>,
    pub resources: Option<ResourceRequest>,
}

/// A `PATCH`: each `Some` is a change.
#[derive(Debug, Clone, Default)]
pub struct InstanceUpdate {
    /// `Some(None)` removes the name.
    pub name: Option<Option<String>>,
    pub labels: Option<Labels>,
    /// The instance's whole lifetime from its creation, in minutes.
    pub ttl_minutes: Option<i64>,
    /// Present at all: refused, this backend cannot resize a running sandbox.
    pub resources: Option<ResourceRequest>,
}

/// The longest `search` of a listing, in characters: each one is a pattern scanned over
/// each of the caller's sessions.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A page of the caller's instances.
#[derive(Debug, Clone, Default)]
pub struct InstanceQuery {
    pub statuses: Vec<SessionStatus>,
    pub labels: Vec<(String, String)>,
    /// Text to find in the id, name, dataset, sample id, image or a label's value (at
    /// most [`MAX_SEARCH_CHARS`]); empty is no filter.
    pub search: Option<String>,
    pub limit: u64,
    pub offset: u64,
    /// `next_cursor` of the previous page (keyset paging; not with an `offset`).
    pub cursor: Option<String>,
}

/// A page of the caller's instances, newest first.
#[derive(Debug, Clone)]
pub struct InstancePage {
    pub instances: Vec<SessionRecord>,
    /// Every match, over all pages.
    pub total: u64,
    /// Whether a later page has any.
    pub has_more: bool,
    /// Where the next page starts (`cursor`); `None` on the last page.
    pub next_cursor: Option<String>,
}

impl InstanceService {
    /// Starts an instance: answers at once with it `creating` (long-poll [`Self::get`]).
    pub async fn create(&self, user_id: &str, new: NewInstance) -> ServiceResult<SessionRecord> {
        let mut errors = Vec::new();
        if let Some(name) = &new.name {
            errors.extend(check_name(&self.config, name));
        }
        errors.extend(check_labels(&self.config, &new.labels, &["labels"]));
        let limits = match &new.resources {
            Some(asked) => self.resource_limits(asked, &mut errors),
            None => SessionLimits::default(),
        };
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        let source = match &new.source {
            InstanceSource::Image(reference) => NewSource::Image { reference },
            InstanceSource::Sample { dataset, sample_id } => {
                NewSource::Sample { dataset, sample_id }
            }
        };
        self.sessions
            .create(CreateSession {
                user_id,
                source,
                ttl_minutes: new.ttl_minutes,
                name: new.name,
                labels: new.labels,
                limits,
            })
            .await
    }

    /// The caller's instance; with `wait`, long-polls while it is `creating`.
    pub async fn get(&self, user_id: &str, id: &str, wait: bool) -> ServiceResult<SessionRecord> {
        self.sessions
            .get(user_id, id, wait)
            .await
            .map_err(|e| instance_not_found(e, id))
    }

    /// The caller's instance's recent usage samples (oldest first), whether it is live,
    /// and the seconds between samples.
    pub async fn metrics(
        &self,
        user_id: &str,
        id: &str,
    ) -> ServiceResult<(Vec<kiln_store::SessionUsage>, bool, u64)> {
        let (samples, live) = self
            .sessions
            .usage_series(user_id, id)
            .await
            .map_err(|e| instance_not_found(e, id))?;
        Ok((samples, live, self.sessions.usage_interval_secs()))
    }

    /// The caller's instances, newest first, and how many match.
    pub async fn list(&self, user_id: &str, query: &InstanceQuery) -> ServiceResult<InstancePage> {
        let search = query.search.as_deref().filter(|s| !s.is_empty());
        if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
            return Err(ServiceError::invalid(
                &["q"],
                format!("String should have at most {MAX_SEARCH_CHARS} characters"),
                "string_too_long",
            ));
        }
        let after = query
            .cursor
            .as_deref()
            .map(crate::cursor::decode_at)
            .transpose()?
            .map(|(requested_at, session_id)| SessionCursor {
                requested_at,
                session_id,
            });
        if after.is_some() && query.offset > 0 {
            return Err(ServiceError::invalid(
                &["offset"],
                "give either offset or cursor, not both",
                "value_error",
            ));
        }
        let empty = InstancePage {
            instances: Vec::new(),
            total: 0,
            has_more: false,
            next_cursor: None,
        };
        // No stored text holds a NUL (PostgreSQL's text cannot), and PostgreSQL refuses one
        // in a parameter: such a search matches nothing, asked of no store.
        if search.is_some_and(|s| s.contains('\0')) {
            return Ok(empty);
        }
        let filter = SessionFilter {
            statuses: query.statuses.clone(),
            labels: query.labels.clone(),
            samples_only: false,
            search: search.map(str::to_string),
            after,
        };
        // One more than the page: whether another page follows, whatever rows were added.
        let (mut instances, total) = self
            .store
            .list_instances(
                user_id,
                &filter,
                query.limit.saturating_add(1),
                query.offset,
            )
            .await?;
        let has_more = instances.len() as u64 > query.limit;
        instances.truncate(usize::try_from(query.limit).unwrap_or(usize::MAX));
        let next_cursor = match instances.last() {
            Some(last) if has_more => Some(crate::cursor::encode_at(
                last.requested_at,
                &last.session_id,
            )),
            _ => None,
        };
        Ok(InstancePage {
            instances,
            total,
            has_more,
            next_cursor,
        })
    }

    /// Changes the name, labels or lifetime of the caller's instance.
    pub async fn update(
        &self,
        user_id: &str,
        id: &str,
        update: InstanceUpdate,
    ) -> ServiceResult<SessionRecord> {
        let instance = self.get(user_id, id, false).await?;
        let mut errors = Vec::new();
        if let Some(Some(name)) = &update.name {
            errors.extend(check_name(&self.config, name));
        }
        if let Some(labels) = &update.labels {
            errors.extend(check_labels(&self.config, labels, &["labels"]));
        }
        let max = i64::from(self.sessions.config().max_ttl_minutes);
        if let Some(ttl) = update.ttl_minutes {
            if !(1..=max).contains(&ttl) {
                errors.push(FieldError::new(
                    &["ttl_minutes"],
                    format!("Input should be between 1 and {max} (minutes from the instance's creation)"),
                    if ttl < 1 { "greater_than_equal" } else { "less_than_equal" },
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
        if update.resources.is_some() {
            return Err(ServiceError::Refused {
                code: "resources_fixed",
                message: "cannot change resources of a running instance on this backend: \
                          create a new instance with the resources it needs"
                    .into(),
            });
        }
        let expires_at = update
            .ttl_minutes
            .map(|ttl| instance.requested_at + Duration::minutes(ttl));
        if expires_at.is_some() && !instance.status.is_live() {
            return Err(ended(&instance));
        }
        let change = SessionChange {
            name: update.name,
            labels: update.labels,
            expires_at,
        };
        let Some(changed) = self.store.change_session(id, &change).await? else {
            // It ended between the read and the write.
            let now = self.get(user_id, id, false).await?;
            return Err(ended(&now));
        };
        if let Some(at) = expires_at {
            self.sessions.set_live_expiry(id, at).await;
        }
        Ok(changed)
    }

    /// Closes the caller's instance (as the Codeset close: a second close is a 409).
    pub async fn delete(&self, user_id: &str, id: &str) -> ServiceResult<SessionRecord> {
        self.sessions
            .close(user_id, id)
            .await
            .map_err(|e| instance_not_found(e, id))
    }

    /// The limits asked for, each checked against the server's maximum.
    fn resource_limits(
        &self,
        asked: &ResourceRequest,
        errors: &mut Vec<FieldError>,
    ) -> SessionLimits {
        let max_disk_mib = self
            .sandboxes
            .available()
            .map(|a| a.max_disk_bytes >> 20)
            .unwrap_or(0);
        let mut within = |field: &str, value: u64, max: u64, key: &str| {
            let ok = (1..=max).contains(&value);
            if !ok {
                errors.push(FieldError::new(
                    &["resources", field],
                    format!("Input should be between 1 and {max} on this server ({key})"),
                    if value < 1 {
                        "greater_than_equal"
                    } else {
                        "less_than_equal"
                    },
                ));
            }
            ok
        };
        let cpu_millicores = asked.cpu.and_then(|cores| {
            let max = self.config.max_cpu_millicores;
            // Thousandths of a core; anything below one is below the minimum.
            let millicores = if cores.is_finite() && cores > 0.0 {
                (cores * 1000.0).round().min(u64::MAX as f64) as u64
            } else {
                0
            };
            within("cpu", millicores, max, "instances.max_cpu_millicores").then_some(millicores)
        });
        let memory_bytes = asked.memory_mib.and_then(|mib| {
            within(
                "memory_mib",
                mib,
                self.config.max_memory_mib,
                "instances.max_memory_mib",
            )
            .then_some(mib << 20)
        });
        let disk_bytes = asked.disk_mib.and_then(|mib| {
            within("disk_mib", mib, max_disk_mib, "runtime.max_disk_mib").then_some(mib << 20)
        });
        SessionLimits {
            cpu_millicores,
            memory_bytes,
            disk_bytes,
        }
    }
}

/// "instance X not found" rather than "session X not found".
fn instance_not_found(e: ServiceError, id: &str) -> ServiceError {
    match e {
        ServiceError::NotFound { .. } => ServiceError::not_found(format!("instance {id}")),
        other => other,
    }
}

fn ended(instance: &SessionRecord) -> ServiceError {
    ServiceError::Conflict(format!(
        "instance {} is {}: its lifetime cannot change any more",
        instance.session_id,
        instance.status.as_str()
    ))
}

fn check_name(config: &InstancesConfig, name: &str) -> Option<FieldError> {
    let chars = name.chars().count();
    if chars == 0 || chars > config.max_name_chars {
        return Some(FieldError::new(
            &["name"],
            format!(
                "String should have between 1 and {} characters",
                config.max_name_chars
            ),
            if chars == 0 {
                "string_too_short"
            } else {
                "string_too_long"
            },
        ));
    }
    name.chars().any(char::is_control).then(|| {
        FieldError::new(
            &["name"],
            "String should have no control characters",
            "string_pattern_mismatch",
        )
    })
}

/// A label key: `[A-Za-z0-9][A-Za-z0-9._/-]*`, as Kubernetes label names (with the
/// prefix's `/`), so it is safe in a query string and a shell.
pub fn valid_label_key(key: &str) -> bool {
    key.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

/// Checks a set of labels; `at` is where they are in the request (`labels`, `label`).
pub fn check_labels(config: &InstancesConfig, labels: &Labels, at: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if labels.len() > config.max_labels {
        errors.push(FieldError::new(
            at,
            format!("at most {} labels", config.max_labels),
            "too_long",
        ));
    }
    for (key, value) in labels {
        let loc: Vec<&str> = at.iter().copied().chain([key.as_str()]).collect();
        if key.chars().count() > config.max_label_key_chars || !valid_label_key(key) {
            errors.push(FieldError::new(
                &loc,
                format!(
                    "a label key has 1 to {} characters among A-Z a-z 0-9 . _ / -, starting \
                     with a letter or digit",
                    config.max_label_key_chars
                ),
                "string_pattern_mismatch",
            ));
        }
        if value.chars().count() > config.max_label_value_chars {
            errors.push(FieldError::new(
                &loc,
                format!(
                    "a label value has at most {} characters",
                    config.max_label_value_chars
                ),
                "string_too_long",
            ));
        } else if value.chars().any(char::is_control) {
            errors.push(FieldError::new(
                &loc,
                "a label value has no control characters",
                "string_pattern_mismatch",
            ));
        }
    }
    errors
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_the_documented_charset() {
        for good in ["team", "a", "kiln.dev/run-id", "A_1", "9lives"] {
            assert!(valid_label_key(good), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a:b", "é", "a=b", "a\n"] {
            assert!(!valid_label_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn label_limits_name_the_offending_key() {
        let config = InstancesConfig {
            max_labels: 2,
            ..InstancesConfig::default()
        };
        let labels: Labels = [("ok", "1"), ("bad key", "2"), ("long", &*"v".repeat(257))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let errors = check_labels(&config, &labels, &["labels"]);
        let locs: Vec<_> = errors.iter().map(|e| e.field.join(".")).collect();
        assert_eq!(locs, ["labels", "labels.bad key", "labels.long"]);
        assert!(check_labels(&InstancesConfig::default(), &Labels::new(), &["labels"]).is_empty());
    }
}
