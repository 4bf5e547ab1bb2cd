//! kiln-api's integration tests, as one test binary: each module is what used to be a
//! binary of its own (`cargo test -p kiln-api --test integration v1_webhooks::` runs one).
//! One binary links once: forty binaries of ≈ 135 MB each were most of a CI run's disk
//! and a good part of its link time. `accept_errors` stays apart, because it lowers the
//! process's RLIMIT_NOFILE for a moment.
//!
//! The helpers come first: `common`'s macros are in scope for the modules after it.
#[macro_use]
mod common;
mod agent_job_support;
mod browser;
mod dashboard_ui;
mod files_support;
mod github_fake;
mod github_support;
mod inproc;
mod sandbox;

mod agent_job_billing;
mod agent_job_github;
mod agent_jobs;
mod api;
mod billing;
mod billing_sessions;
mod contract;
mod dashboard_browser;
mod docker_sessions;
mod github;
mod health_probes;
mod health_router;
mod hostile_clients;
mod mcp_router;
mod node_full;
mod openapi_conformance;
mod request_ids;
mod router;
mod servers_router;
mod session_end_race;
mod session_integrity;
mod session_usage;
mod sessions;
mod v1_auth;
mod v1_base_images;
mod v1_exec;
mod v1_files;
mod v1_files_escape;
mod v1_files_router;
mod v1_instance_search;
mod v1_instances;
mod v1_instances_router;
mod v1_network;
mod v1_org_security;
mod v1_orgs;
mod v1_parallel;
mod v1_ports;
mod v1_ports_router;
mod v1_snapshots;
mod v1_webhooks;
