//! Checks of the session and job contracts that both backends apply before writing.
use crate::{JobStatus, SessionStatus, StoreError};

/// `end_session` moves a session to `Closed` or `Terminated` only; `Error` has its own
/// method, and the others are not ends.
pub(crate) fn check_end_status(status: SessionStatus) -> Result<(), StoreError> {
    match status {
        SessionStatus::Closed | SessionStatus::Terminated => Ok(()),
        other => Err(StoreError::Invalid(format!(
            "a session cannot be ended as {:?}: only closed or terminated",
            other.as_str()
        ))),
    }
}

/// The statuses of a job still in progress, as stored.
pub(crate) const UNFINISHED_JOB_STATUSES: &str = "('pending', 'starting', 'running')";

/// Whether moving to `status` records `started_at` (kept if already set). `Running` counts
/// too, so that a job that skipped `Starting` still says when it started.
pub(crate) fn job_starts(status: JobStatus) -> bool {
    matches!(status, JobStatus::Starting | JobStatus::Running)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_and_terminated_end_a_session() {
        assert!(check_end_status(SessionStatus::Closed).is_ok());
        assert!(check_end_status(SessionStatus::Terminated).is_ok());
        for status in [
            SessionStatus::Creating,
            SessionStatus::Ready,
            SessionStatus::Error,
        ] {
            assert!(matches!(
                check_end_status(status),
                Err(StoreError::Invalid(_))
            ));
        }
    }

    #[test]
    fn unfinished_statuses_are_exactly_the_unfinished_ones() {
        use JobStatus::*;
        for status in [Pending, Starting, Running, Completed, Error, Cancelled] {
            let listed = UNFINISHED_JOB_STATUSES.contains(&format!("'{}'", status.as_str()));
            assert_eq!(listed, !status.is_finished(), "{status:?}");
        }
    }
}
