//! One watch per object (a sandbox's Pod, its SandboxClaim), feeding its latest state to
//! whoever waits for it (readiness in `create`, then death detection). A watch that breaks is resumed from
//! the last resourceVersion it saw (bookmarks included); one the server answers
//! 410 Gone (the version is too old) starts over with a list.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::watch as channel;

use super::retry::retry;

/// What is known of an object.
#[derive(Debug, Clone)]
pub enum View<K> {
    /// Not seen yet.
    Unknown,
    /// Its latest state.
    Present(Box<K>),
    /// Deleted.
    Gone,
}

/// What is known of a Pod.
pub type PodView = View<Pod>;

/// What the watch needs of an object type.
pub trait Watched:
    kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}
impl<K> Watched for K where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

/// A pause between watches that ended in an error, so a failing server is not hammered.
const REWATCH_PAUSE: Duration = Duration::from_millis(100);

/// Starts watching Pod `name`; the task ends when the Pod is gone or it is aborted.
pub fn watch_pod(
    api: Api<Pod>,
    name: &str,
) -> (channel::Receiver<PodView>, tokio::task::AbortHandle) {
    watch_object(api, name, true)
}

/// Starts watching object `name`; the task ends when it is gone or it is aborted.
/// `absent_is_gone: false` for an object someone else is about to create (a claimed
/// sandbox's Pod): not finding it at first is `Unknown`, not `Gone`.
pub fn watch_object<K: Watched>(
    api: Api<K>,
    name: &str,
    absent_is_gone: bool,
) -> (channel::Receiver<View<K>>, tokio::task::AbortHandle) {
    let (tx, rx) = channel::channel(View::Unknown);
    let task = tokio::spawn(run(api, name.to_string(), tx, absent_is_gone));
    (rx, task.abort_handle())
}

async fn run<K: Watched>(
    api: Api<K>,
    name: String,
    tx: channel::Sender<View<K>>,
    absent_is_gone: bool,
) {
    let mut seen = false;
    let fields = format!("metadata.name={name}");
    let params = ListParams::default().fields(&fields);
    loop {
        // A watch may have shown it since the last list.
        seen |= matches!(*tx.borrow(), View::Present(_));
        // (Re)list: the current state and the version to watch from.
        let listed = retry(|| api.list(&params)).await.0;
        let list = match listed {
            Ok(list) => list,
            Err(err) => {
                tracing::warn!(object = %name, error = %err, "cannot list it; trying again");
                tokio::time::sleep(REWATCH_PAUSE * 10).await;
                continue;
            }
        };
        match list.items.into_iter().next() {
            Some(object) => {
                seen = true;
                tx.send_replace(View::Present(Box::new(object)));
            }
            None if absent_is_gone || seen => {
                tx.send_replace(View::Gone);
                return;
            }
            None => {}
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

/// Watches from `version` on, resuming after every break, until the object is deleted
/// or the version expires.
async fn follow<K: Watched>(
    api: &Api<K>,
    fields: &str,
    version: &mut String,
    tx: &channel::Sender<View<K>>,
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
                Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                    if let Some(v) = &object.meta().resource_version {
                        version.clone_from(v);
                    }
                    tx.send_replace(View::Present(Box::new(object)));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    tx.send_replace(View::Gone);
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
