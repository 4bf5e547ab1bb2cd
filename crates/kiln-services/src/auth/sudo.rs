//! Whether a caller's credential holds a live sudo grant (`crate::accounts::sudo` grants
//! them). Here, beside the credentials, because checks outside accounts need it too (the
//! revocation of one's own API keys).
use std::sync::Arc;

use chrono::Utc;
use kiln_store::{Store, SudoHolder};

use super::{Credential, Principal};
use crate::error::{ServiceError, ServiceResult};

/// The credential a grant belongs to; `None` for a JWT without a device session (the
/// Codeset `/auth/token` flow), which has nothing to hold one.
pub(crate) fn holder_of(me: &Principal) -> Option<SudoHolder> {
    match &me.via {
        Credential::ApiKey { key_id, .. } => Some(SudoHolder::ApiKey(key_id.clone())),
        Credential::AccessToken => me.session_id.clone().map(SudoHolder::DeviceSession),
    }
}

/// 403 `sudo_required` unless the caller's credential holds a live grant. An account
/// without a password sign-in (made by an operator, GitHub, an org's own account) has
/// nothing to re-verify: its destructive routes keep their own rules (those that recheck
/// the password refuse it with 409; revoking a leaked org key stays possible).
pub(crate) async fn require(store: &Arc<dyn Store>, me: &Principal) -> ServiceResult<()> {
    if store.get_account(&me.user.user_id).await?.is_none() {
        return Ok(());
    }
    let live = match holder_of(me) {
        Some(holder) => store
            .get_sudo(&holder)
            .await?
            .is_some_and(|until| until > Utc::now()),
        None => false,
    };
    if live {
        Ok(())
    } else {
        Err(ServiceError::Denied {
            code: "sudo_required",
            message: "this action needs sudo: POST /v1/auth/sudo with your password (and a \
                      second-factor code when enrolled) from this sign-in or key, then retry"
                .into(),
        })
    }
}
