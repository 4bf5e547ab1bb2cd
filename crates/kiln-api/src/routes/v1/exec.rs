//! Exec in an instance: synchronous, history, Server-Sent Events streams, kill.
use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
}
