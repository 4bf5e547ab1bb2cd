//! One watch per sandbox Pod, feeding its latest state to whoever waits for it
//! (readiness in `create`, then death detection). A watch that breaks is resumed from
//! the last resourceVersion it saw (bookmarks included); one the server answers
//! 410 Gone (the version is too old) starts over with a list.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch as channel;

use super::retry::retry;

/// What is known of a Pod.
#[derive(Debug, Clone)]
pub enum PodView {
    /// Not seen yet.
    Unknown,
    /// Its latest state.
    Present(Box<Pod>),
    /// Deleted.
    Gone,
}

/// A pause between watches that ended in an error, so a failing server is not hammered.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// Starts watching Pod `name`; the task ends when the Pod is gone or it is aborted.
pub fn watch_pod(
    api: Api<Pod>,
    name: &str,
) -> (channel::Receiver<PodView>, tokio::task::AbortHandle) {
    let (tx, rx) = channel::channel(PodView::Unknown);
    let task = tokio::spawn(run(api, name.to_string(), tx));
    (rx, task.abort_handle())
}

async fn run(api: Api<Pod>, name: String, tx: channel::Sender<PodView>) {
    let fields = format!("metadata.name={name}");
    let params = ListParams::default().fields(&fields);
    loop {
        // (Re)list: the current state and the version to watch from.
        let listed = retry(|| api.list(&params)).await.0;
        let list = match listed {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(pod = %name, error = %err, "cannot list the Pod; trying again");
                tokio::time::sleep(REWATCH_PAUSE * 10).await;
                continue;
            }
        };
        match list.items.into_iter().next() {
            Some(pod) => {
                tx.send_replace(PodView::Present(Box::new(pod)));
            }
            None => {
                tx.send_replace(PodView::Gone);
                return;
            }
        }
        let mut version = list.metadata.resource_version.unwrap_or_default();
        match follow(&api, &fields, &mut version, &tx).await {
            Ended::Gone => return,
            Ended::Expired => continue,
        }
    }
}

enum Ended {
    Gone,
    /// 410: list again.
    Expired,
}

/// Watches from `version` on, resuming after every break, until the Pod is deleted or
/// the version expires.
async fn follow(
    api: &Api<Pod>,
    fields: &str,
    version: &mut String,
    tx: &channel::Sender<PodView>,
) -> Ended {
    let params = WatchParams::default().fields(fields).timeout(290);
    loop {
        let stream = match api.watch(&params, version).await {
            Ok(stream) => stream,
            Err(err) if super::api_code(&err) == Some(410) => return Ended::Expired,
            Err(err) => {
                tracing::debug!(error = %err, "watch refused; resuming");
                tokio::time::sleep(REWATCH_PAUSE).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    if let Some(v) = &pod.metadata.resource_version {
                        version.clone_from(v);
                    }
                    tx.send_replace(PodView::Present(Box::new(pod)));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    tx.send_replace(PodView::Gone);
                    return Ended::Gone;
                }
                Ok(WatchEvent::Bookmark(bookmark)) => {
                    version.clone_from(&bookmark.metadata.resource_version);
                }
                Ok(WatchEvent::Error(status)) if status.code == 410 => return Ended::Expired,
                Ok(WatchEvent::Error(status)) => {
                    tracing::debug!(status = ?status, "watch error event; resuming");
                    break;
                }
                Err(err) => {
                    tracing::debug!(error = %err, "watch broke; resuming");
                    break;
                }
            }
        }
        // Ended (timeout, a dropped connection): resume where it stopped.
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}
