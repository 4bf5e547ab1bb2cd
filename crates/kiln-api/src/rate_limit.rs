//! Request rate limits (GCRA token buckets from `governor`): per API key (per user for
//! access tokens) on authenticated requests, per client address on everything else —
//! sign-in, refresh, and requests whose credential fails, so guessing keys is throttled
//! too. `/health` (and its probes `/health/*`) is exempt, so a monitor never sees a 429. Over a limit: 429
//! `rate_limited` with `Retry-After`.
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kiln_config::ServerConfig;
use kiln_services::auth::{Credential, Principal};

use crate::error::ApiError;
use crate::extract::Authenticated;
use crate::server::{client_address, client_key};
use crate::AppState;

/// How often keys whose buckets are full again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct RateLimits {
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    epoch: Instant,
    pruned_at_secs: AtomicU64,
    /// For `trusted_proxies`.
    server: ServerConfig,
}

fn keyed<K: std::hash::Hash + Eq + Clone>(
    per_sec: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let per_sec = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
    Some(RateLimiter::keyed(
        Quota::per_second(per_sec).allow_burst(burst),
    ))
}

impl RateLimits {
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            per_key: keyed(config.key_requests_per_sec, config.key_burst),
            per_ip: keyed(config.ip_requests_per_sec, config.ip_burst),
            clock: DefaultClock::default(),
            epoch: Instant::now(),
            pruned_at_secs: AtomicU64::new(0),
            server: config.clone(),
        }
    }

    fn check_principal(&self, principal: &Principal) -> Result<(), ApiError> {
        let Some(limiter) = &self.per_key else {
            return Ok(());
        };
        let key = match &principal.via {
            Credential::ApiKey { key_id, .. } => format!("key:{key_id}"),
            Credential::AccessToken => format!("user:{}", principal.user.user_id),
        };
        self.check(limiter, &key, "for this API key")
    }

    fn check_address(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.per_ip, ip) {
            (Some(limiter), Some(ip)) => self.check(limiter, &ip, "from this address"),
            _ => Ok(()),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        what: &str,
    ) -> Result<(), ApiError> {
        self.prune_now_and_then();
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::RateLimited {
                message: format!("too many requests {what}; retry after {} s", secs.max(1)),
                retry_after_secs: secs.max(1),
            }
        })
    }

    /// Buckets live as long as their keys; keys that would start afresh anyway are
    /// dropped about once a minute, so memory follows recent clients only.
    fn prune_now_and_then(&self) {
        let now = self.epoch.elapsed().as_secs();
        let last = self.pruned_at_secs.load(Ordering::Relaxed);
        if now < last + PRUNE_EVERY.as_secs()
            || self
                .pruned_at_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Some(limiter) = &self.per_key {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The middleware. A valid credential is checked against its key's bucket and handed
/// to [`crate::extract::CurrentUser`] (so it is authenticated once); anything else
/// against the client address's. A failed credential is not answered here: the route's
/// extractor gives its usual 401.
pub(crate) async fn limit(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/health/") {
        return Ok(next.run(req).await);
    }
    let principal = match crate::cookies::credential(req.headers(), req.method()) {
        Ok(credential) => state.kiln.auth.authenticate(credential).await.ok(),
        Err(_) => None,
    };
    match principal {
        Some(principal) => {
            state.limits.check_principal(&principal)?;
            req.extensions_mut().insert(Authenticated(principal));
        }
        None => {
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| {
                    client_key(client_address(
                        addr.ip(),
                        req.headers(),
                        &state.limits.server,
                    ))
                });
            state.limits.check_address(ip)?;
        }
    }
    Ok(next.run(req).await)
}
