//! What tools share: waiting (bounded) for a session or a verification, and the JSON
//! shapes tools answer with.
use std::time::{Duration, Instant};

use kiln_domain::{
    InstanceExecRecord, SessionRecord, SessionSource, SessionStatus, VerificationJobRecord,
};
use kiln_services::instances::exec::{ExecMode, ExecSpec, FrameKind};
use kiln_services::{Kiln, ServiceResult};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use serde_json::{json, Value};

/// Long-polls the caller's session until it is no longer `creating`, or `max_wait` passed.
pub(crate) async fn wait_ready(
    kiln: &Kiln,
    user: &str,
    session_id: &str,
) -> ServiceResult<SessionRecord> {
    let deadline = Instant::now() + Duration::from_secs(kiln.config.mcp.max_wait_secs);
    loop {
        let session = kiln.instances.get(user, session_id, true).await?;
        if session.status != SessionStatus::Creating || Instant::now() >= deadline {
            return Ok(session);
        }
    }
}

/// Long-polls a verification job until it is finished, or `max_wait` passed.
pub(crate) async fn wait_verification(
    kiln: &Kiln,
    user: &str,
    session_id: &str,
    job_id: &str,
) -> ServiceResult<VerificationJobRecord> {
    let deadline = Instant::now() + Duration::from_secs(kiln.config.mcp.max_wait_secs);
    loop {
        let job = kiln
            .sessions
            .verification_job(user, session_id, job_id, true)
            .await?;
        if job.status.is_finished() || Instant::now() >= deadline {
            return Ok(job);
        }
    }
}

pub(crate) fn session_json(session: &SessionRecord) -> Value {
    let source = match &session.source {
        SessionSource::Sample {
            dataset, sample_id, ..
        } => json!({ "dataset": dataset, "sample_id": sample_id }),
        SessionSource::Image { reference } => json!({ "image": reference }),
    };
    json!({
        "session_id": session.session_id,
        "status": session.status.as_str(),
        "source": source,
        "expires_at": session.expires_at,
        "error": session.error_message,
    })
}

/// A verification as an agent needs it: the verdict first, then per-test statuses.
pub(crate) fn verification_json(job: &VerificationJobRecord) -> Value {
    let mut out = json!({
        "job_id": job.job_id,
        "status": job.status.as_str(),
    });
    if let Some(message) = &job.error_message {
        out["error"] = json!({ "code": job.error_code, "message": message });
    }
    let Some(result) = &job.result else {
        return out;
    };
    // The grading is serialized as the API serves it (SWE-bench or codeset-gym rules).
    let grading = serde_json::to_value(&result.grading).unwrap_or(Value::Null);
    out["resolved"] = json!(result.is_success);
    out["passed"] = json!(result.passed);
    out["failed"] = json!(result.failed);
    out["skipped"] = json!(result.skipped);
    for key in ["resolution", "rules", "tests_status", "log_valid"] {
        if let Some(value) = grading.get(key) {
            out[key] = value.clone();
        }
    }
    out["failures"] = json!(result
        .failures
        .iter()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect::<Vec<_>>());
    out["log_tail"] = json!(tail(&result.stdout, 4096).0);
    out
}

/// An exec as a tool answers it: the tail of each output, cut to `max` bytes.
pub(crate) fn exec_json(exec: &InstanceExecRecord, max: usize) -> Value {
    let (stdout, cut_out) = tail(&exec.stdout, max);
    let (stderr, cut_err) = tail(&exec.stderr, max);
    json!({
        "exit_code": exec.exit_code, "stdout": stdout, "stderr": stderr,
        "truncated": exec.truncated || cut_out || cut_err,
        "duration_ms": exec.duration_ms, "error": exec.error,
    })
}

/// The last `max` bytes of `text` (on a character boundary), and whether any was cut.
pub(crate) fn tail(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (&text[start..], true)
}

/// Most bytes of output one progress notification carries.
const MAX_PROGRESS_CHUNK: usize = 4096;

/// Runs an exec whose caller asked for progress: streamed, each piece of output a progress
/// notification (`progress`: output bytes so far, `message`: the piece), then the
/// finished exec as a synchronous one answers. The stream kills the command if the call
/// is dropped (the client cancelled it) before the end.
pub(crate) async fn exec_with_progress(
    kiln: &Kiln,
    user: &str,
    session_id: &str,
    mut spec: ExecSpec,
    peer: &Peer<RoleServer>,
    token: ProgressToken,
) -> ServiceResult<InstanceExecRecord> {
    spec.mode = ExecMode::Stream;
    let started = kiln.instances.exec(user, session_id, spec).await?;
    let mut stream = kiln
        .instances
        .exec_stream(user, session_id, &started.exec_id, 0, true)
        .await?;
    let mut seen = 0usize;
    while let Some(frame) = stream.next().await {
        if !matches!(frame.kind, FrameKind::Stdout | FrameKind::Stderr) {
            continue;
        }
        seen += frame.payload.len();
        let text = String::from_utf8_lossy(&frame.payload);
        let piece = tail(&text, MAX_PROGRESS_CHUNK).0.to_string();
        let note = ProgressNotificationParam::new(token.clone(), seen as f64).with_message(piece);
        // A client that stopped listening to progress still gets the result.
        let _ = peer.notify_progress(note).await;
    }
    drop(stream);
    kiln.instances
        .exec_get(user, session_id, &started.exec_id)
        .await
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_end_on_a_character_boundary() {
        assert_eq!(tail("abc", 3), ("abc", false));
        assert_eq!(tail("abcdef", 2), ("ef", true));
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aéb", 2), ("b", true));
    }
}
