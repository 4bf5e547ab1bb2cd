//! Column lists shared by both backends' queries: the schemas name their columns alike.

pub(crate) const USER: &[&str] = &[
    "user_id",
    "name",
    "email",
    "github_id",
    "github_login",
    "is_admin",
    "is_active",
    "created_at",
    "last_login_at",
    "terms_accepted_at",
];

pub(crate) const API_KEY: &[&str] = &[
    "key_id",
    "user_id",
    "name",
    "masked",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
];

pub(crate) const ORGANIZATION: &[&str] = &[
    "org_id",
    "slug",
    "name",
    "personal_of",
    "account_user_id",
    "created_at",
];

pub(crate) const SAMPLE: &[&str] = &[
    "dataset",
    "sample_id",
    "version",
    "latest",
    "version_description",
    "created_at",
    "instance_id",
    "repo",
    "base_commit",
    "record",
];

pub(crate) const SESSION: &[&str] = &[
    "session_id",
    "user_id",
    "dataset",
    "sample_id",
    "sample_version",
    "status",
    "requested_at",
    "ready_at",
    "expires_at",
    "ended_at",
    "sandbox_id",
    "location",
    "error_code",
    "error_message",
    "usage_cpu_micros",
    "usage_memory_peak_bytes",
    "usage_disk_used_bytes",
    "usage_disk_limit_bytes",
    "usage_pids_peak",
    "usage_at",
    "image",
    "name",
    "labels",
    "limit_cpu_millicores",
    "limit_memory_bytes",
    "limit_disk_bytes",
];

pub(crate) const INTERACTION: &[&str] = &[
    "interaction_id",
    "session_id",
    "seq",
    "kind",
    "created_at",
    "request",
    "exit_code",
    "stdout",
    "stderr",
    "execution_time_seconds",
    "success",
    "message",
    "finished_at",
    "output_expired_at",
];

pub(crate) const VERIFICATION_JOB: &[&str] = &[
    "job_id",
    "session_id",
    "user_id",
    "sample_id",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "result",
    "error_code",
    "error_message",
];

pub(crate) const AGENT_JOB: &[&str] = &[
    "job_id",
    "user_id",
    "repo",
    "git_ref",
    "agent_id",
    "status",
    "progress",
    "secret_hash",
    "error_message",
    "result_path",
    "created_at",
    "started_at",
    "completed_at",
    "node_id",
];

/// `a, b, c`.
pub(crate) fn plain(columns: &[&str]) -> String {
    columns.join(", ")
}

/// `t.a AS p_a, t.b AS p_b`: for joins of tables that share column names (`name`,
/// `created_at`), read back with a prefix.
pub(crate) fn aliased(table: &str, prefix: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{table}.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    #[test]
    fn aliased_prefixes_every_column() {
        assert_eq!(
            super::aliased("k", "k_", &["a", "b"]),
            "k.a AS k_a, k.b AS k_b"
        );
    }
}
