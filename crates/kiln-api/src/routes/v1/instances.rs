//! Instances: create (from a base image or a dataset sample), list, get, change, delete.
use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
}
