//! Webhooks: signed, retried deliveries of instance, session and verification events.
use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
}
