//! Limits both sides agree on. Each payload limit leaves room for base64 (4/3) inside
//! one [`crate::MAX_FRAME_BYTES`] frame.

/// Most output bytes kept per stream of one exec (2 MiB: both streams, base64, fit a frame).
pub const MAX_OUTPUT_BYTES: u64 = 2 * 1024 * 1024;

/// Output kept per stream when the caller does not say.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// Most bytes one `read_file` returns (4 MiB, about 5.3 MiB as base64).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Longest exec timeout the agent accepts (24 h).
pub const MAX_EXEC_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Exec timeout when the caller does not say (10 min).
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Between SIGTERM and SIGKILL when an exec times out or is stopped.
pub const EXEC_KILL_GRACE_MS: u64 = 2_000;

/// Most entries one `list_dir` returns.
pub const MAX_DIR_ENTRIES: usize = 10_000;
