//! State shared by every connection of one agent process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::exec_table::ExecTable;
use crate::reaper::ChildReaper;

/// Connections served at once; more are refused with `busy`.
pub const MAX_CONNECTIONS: usize = 256;

/// Everything the request handlers need.
pub struct Agent {
    /// Collects exit statuses (and orphans).
    pub reaper: ChildReaper,
    /// Running execs, for kill and shutdown.
    pub execs: Arc<ExecTable>,
    /// Environment every command starts from.
    pub base_env: BTreeMap<OsString, OsString>,
    /// For `pong`.
    pub started: Instant,
    /// Removed on shutdown.
    pub socket_path: Option<PathBuf>,
    /// What the hello of a TCP client must carry.
    pub secret: Option<String>,
    /// PID 1 of a pid namespace: shutdown may signal every process (`kill(-1)`).
    pub is_pid1: bool,
    /// Connections being served.
    pub connections: AtomicUsize,
    /// Held shared while an exec is spawned and listed, exclusively while leftovers are
    /// killed: a process being spawned is never taken for a leftover.
    pub spawn_gate: RwLock<()>,
}
