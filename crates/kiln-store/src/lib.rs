//! Kiln's storage. Everything that must survive a restart lives behind [`Store`], the union of
//! one trait per area ([`AccountStore`], [`CatalogStore`], [`SessionStore`], …): users, keys
//! and tokens, datasets and samples, sessions and interactions, verification jobs, the
//! ledger, agent jobs.
//!
//! One implementation, [`sql::SqlStore`], writes every query once for both backends, with a
//! small [`sql::Dialect`] for what differs: [`sqlite::SqliteStore`] (the default, one file,
//! WAL) and [`postgres::PgStore`] (multi-node) share it and one test suite. [`connect`] picks
//! one from the URL.
#![forbid(unsafe_code)]

pub mod change_feed;
mod columns;
mod error;
mod json_column;
mod missing_reference;
pub mod postgres;
mod sample_json;
mod search_pattern;
mod session_rules;
pub mod sql;
pub mod sqlite;
mod timestamp;
mod traits;
mod unique_violation;

use std::sync::Arc;

pub use change_feed::{ChangeFeed, ChangeListener, Heard};
pub use error::StoreError;
pub use kiln_domain::*;
pub use traits::BaseImageStore;
pub use traits::ExecStore;
pub use traits::NodeRegistryStore;
pub use traits::NodeStore;
pub use traits::OrgSecurityStore;
pub use traits::OrgStore;
pub use traits::PortForwardStore;
pub use traits::SnapshotStore;
pub use traits::WebhookStore;
pub use traits::{
    AccountStore, AgentJobStore, Backend, BillingStore, CatalogStore, GithubStore, SessionStore,
    Store, VerificationStore,
};
pub use traits::{Announce, Announcing};
pub use traits::{MfaStore, PasswordAccountStore};

/// Every store trait, for code that calls store methods on a concrete store type (on an
/// `Arc<dyn Store>` they are callable without imports).
pub mod prelude {
    pub use crate::traits::BaseImageStore;
    pub use crate::traits::ExecStore;
    pub use crate::traits::NodeRegistryStore;
    pub use crate::traits::NodeStore;
    pub use crate::traits::OrgSecurityStore;
    pub use crate::traits::OrgStore;
    pub use crate::traits::PortForwardStore;
    pub use crate::traits::SnapshotStore;
    pub use crate::traits::WebhookStore;
    pub use crate::traits::{
        AccountStore, AgentJobStore, Backend, BillingStore, CatalogStore, GithubStore,
        SessionStore, Store, VerificationStore,
    };
    pub use crate::traits::{MfaStore, PasswordAccountStore};
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Opens the store named by `url`: `sqlite://PATH` (created if missing) or
/// `postgres://…` / `postgresql://…`. Migrations are applied before it returns.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
