//! `?watch=true`: newline-delimited events from a resourceVersion on, bookmarks, 410
//! Gone for a compacted version, and injected breaks.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::{meta_of, status_body, Event, Selectors, Shared};

fn line(value: &serde_json::Value) -> Result<Bytes, Infallible> {
    let mut text = value.to_string();
    text.push('\n');
    Ok(Bytes::from(text))
}

fn event_line(event: &Event) -> Result<Bytes, Infallible> {
    line(&json!({"type": event.kind, "object": event.object}))
}

/// A watch of `resource` (`pods` or a custom plural) in namespace `ns`.
pub(super) fn watch(
    shared: Arc<Shared>,
    resource: &'static str,
    ns: String,
    query: Selectors,
) -> Response {
    let mut updates = shared.events.subscribe();
    let mut cut = shared.cut.subscribe();
    let from: u64 = query
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (backlog, expired, broken) = {
        let mut inner = shared.lock();
        let expired = from != 0 && from < inner.compacted_below;
        let backlog: Vec<Event> = if from == 0 {
            // No version: the current objects as ADDED, then changes.
            let current: Vec<Value> = if resource == "pods" {
                inner
                    .pods
                    .iter()
                    .filter(|((n, _), _)| *n == ns)
                    .filter_map(|(_, pod)| serde_json::to_value(pod).ok())
                    .collect()
            } else {
                inner
                    .custom
                    .iter()
                    .filter(|((p, n, _), _)| *p == resource && *n == ns)
                    .map(|(_, v)| v.clone())
                    .collect()
            };
            current
                .into_iter()
                .map(|object| Event {
                    version: inner.version,
                    kind: "ADDED",
                    resource,
                    object,
                })
                .collect()
        } else {
            inner
                .history
                .iter()
                .filter(|e| e.version > from)
                .cloned()
                .collect()
        };
        let broken = inner.broken_watches > 0;
        if broken {
            inner.broken_watches -= 1;
        }
        (backlog, expired, broken)
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let bookmarks = query.allow_watch_bookmarks == Some(true);
    let interval = shared.options.bookmark_interval;
    let timeout = Duration::from_secs(query.timeout_seconds.unwrap_or(290).min(3600));
    tokio::spawn(async move {
        if expired {
            let gone = status_body(410, "Expired", "too old resource version");
            let _ = tx
                .send(line(&json!({"type": "ERROR", "object": gone})))
                .await;
            return;
        }
        let selected = |e: &Event| {
            let meta = meta_of(&e.object);
            e.resource == resource
                && meta.namespace.as_deref() == Some(ns.as_str())
                && query.matches(&meta)
        };
        let mut last = from;
        for event in backlog.iter().filter(|e| selected(e)) {
            last = last.max(event.version);
            if tx.send(event_line(event)).await.is_err() || broken {
                return;
            }
        }
        let end = tokio::time::sleep(timeout);
        let mut end = std::pin::pin!(end);
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                () = &mut end => return,
                _ = cut.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    // Only as far as this watch has delivered: a resume from it
                    // must not skip an event still on its way.
                    let version = last;
                    let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Pod",
                        "apiVersion": "v1", "metadata": {"resourceVersion": version.to_string()}}});
                    if tx.send(line(&bookmark)).await.is_err() {
                        return;
                    }
                }
                update = updates.recv() => match update {
                    Ok(event) if event.version > last && selected(&event) => {
                        last = event.version;
                        if tx.send(event_line(&event)).await.is_err() || broken {
                            return;
                        }
                    }
                    Ok(event) => last = last.max(event.version),
                    // Fell behind: end, the client resumes from its last version.
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
