//! Kiln's domain records: what users, samples, sessions, interactions, verification and
//! agent jobs and ledger transactions are, with their statuses and the rules that need no
//! I/O (e.g. how a session's time is priced). The store keeps them, the services act on
//! them, the HTTP layer maps them to the contract's JSON; none of them is needed to read
//! these types, so this crate depends on none of them. (A verification job's result is
//! `kiln_verify::VerificationResult`, re-exported here: the verifier, pure itself, defines
//! what its grading says.)
#![forbid(unsafe_code)]

mod accounts_model;
mod agent_job_model;
mod base_image_model;
mod billing_model;
mod exec_model;
mod model;
mod nodes_model;
mod org_security_model;
mod orgs_model;
mod port_forward_model;
mod session_model;
mod snapshot_model;
mod webhook_model;

pub use accounts_model::*;
pub use agent_job_model::*;
pub use base_image_model::*;
pub use billing_model::*;
pub use exec_model::*;
pub use model::*;
pub use nodes_model::*;
pub use org_security_model::*;
pub use orgs_model::*;
pub use port_forward_model::*;
pub use session_model::*;
pub use snapshot_model::*;
pub use webhook_model::*;

pub use kiln_verify::VerificationResult;
