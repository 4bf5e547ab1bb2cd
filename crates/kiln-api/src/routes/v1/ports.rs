//! Port forwards: reach a service listening inside an instance.
use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
}
