//! One module per resource; each handler's `#[utoipa::path]` is its OpenAPI entry.
pub mod agent_jobs;
pub mod auth;
pub mod billing;
pub mod datasets;
pub mod github;
pub mod health;
pub mod metrics;
pub mod samples;
pub mod sessions;
pub mod users;
