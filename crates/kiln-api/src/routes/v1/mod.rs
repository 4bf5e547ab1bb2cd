//! The general sandbox API under `/v1` (document 002): instances and what can be done
//! to them. Same authentication, errors and rate limits as `/api/v1`; its own OpenAPI
//! document at `/v1/openapi.json`. One module per area, each with a `routes()`.
use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub mod auth;
pub mod auth_mfa;
pub mod auth_models;
pub mod base_images;
pub mod base_images_models;
pub mod exec;
mod exec_models;
pub mod files;
pub mod files_models;
pub mod instances;
pub mod instances_models;
pub mod network;
mod network_models;
pub mod org_billing;
pub mod org_security;
pub mod org_security_models;
pub mod orgs;
pub mod orgs_models;
pub mod parallel;
mod parallel_models;
pub mod ports;
pub mod ports_models;
pub(crate) mod ports_proxy;
pub mod servers;
mod servers_models;
pub mod snapshots;
pub mod snapshots_models;
pub mod verifications;
pub mod verifications_models;
pub mod webhooks;
mod webhooks_models;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .merge(instances::routes())
        .merge(network::routes())
        .merge(exec::routes())
        .merge(files::routes())
        .merge(snapshots::routes())
        .merge(ports::routes())
        .merge(webhooks::routes())
        .merge(base_images::routes())
        .merge(parallel::routes())
        .merge(auth::routes())
        .merge(auth_mfa::routes())
        .merge(servers::routes())
        .merge(orgs::routes())
        .merge(org_billing::routes())
        .merge(org_security::routes())
        .merge(verifications::routes())
}
