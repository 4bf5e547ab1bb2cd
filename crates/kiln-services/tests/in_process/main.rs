//! The services in-process over `FakeRuntime` (kiln-test-support): sessions, recovery,
//! verification jobs and agent jobs with a real SQLite store and no root, no server, no
//! real sandbox. Each test runs in well under a second (the slowest waits out the
//! runtime's one-second liveness grace).
#![allow(clippy::unwrap_used)]

mod agent_job_nodes;
mod agent_jobs;
mod auth;
mod harness;
mod imports;
mod nodes_wake;
mod sessions;
mod verification;
mod webhooks;
