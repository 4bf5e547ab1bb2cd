//! Retries of API calls the server asks to repeat (429) or failed on its side (5xx, a
//! dropped connection): a few times, with a doubling pause.

use std::future::Future;
use std::time::Duration;

const ATTEMPTS: u32 = 6;
const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// Whether asking again may succeed.
pub fn retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `call` until it succeeds, fails for good, or has been tried `ATTEMPTS` times.
/// The `bool` says whether it was retried (a create retried after a 5xx may meet its
/// own earlier success as 409).
pub async fn retry<T, F, Fut>(mut call: F) -> (Result<T, kube::Error>, bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(err) if retryable(&err) && attempt < ATTEMPTS => {
                tracing::debug!(error = %err, attempt, "Kubernetes API call retried");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            result => return (result, attempt > 1),
        }
    }
}
