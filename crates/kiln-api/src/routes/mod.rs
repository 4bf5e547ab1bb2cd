//! One module per resource; each handler's `#[utoipa::path]` is its OpenAPI entry. A
//! resource's request and response types sit beside it (`<resource>_models.rs`, or in the
//! resource's own file when they are few); `crate::models` has the shapes all share.
pub mod agent_jobs;
pub mod auth;
pub mod billing;
pub mod billing_models;
pub mod datasets;
pub mod github;
pub mod github_models;
pub mod health;
pub mod metrics;
pub mod samples;
pub mod samples_models;
pub mod sessions;
pub mod sessions_models;
pub mod users;
pub mod users_models;
pub mod v1;
