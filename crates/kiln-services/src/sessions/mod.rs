//! Sessions: a sandbox made from a sample's environment image, the commands run in it,
//! and its life (`creating → ready | error`, `closed` on delete, `terminated` at expiry).
//!
//! Each live session has a worker task ([`worker`]) that runs its interactions one at a
//! time, in the order received. Every change is stored first and then announced through
//! [`Changes`], so long-polling readers see it at once and a restart loses nothing that
//! was acknowledged.
mod action_limits;
mod egress;
mod forks;
mod lost;
mod metering;
mod node_registry;
mod recent_images;
mod recovery;
mod replace;
mod retention;
mod sample_limits;
mod usage;
pub(crate) mod work_queue;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kiln_config::{BillingConfig, SessionsConfig};
use kiln_runtime::{Limits, Runtime, RuntimeError, SandboxId, SandboxSource, SandboxSpec};
use kiln_store::{
    Announce, InteractionKind, InteractionOutcome, InteractionRecord, JobStatus, Labels,
    NewInteraction, NewSession, SessionLimits, SessionRecord, SessionSource, SessionStatus, Store,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::changes::Changes;
use crate::datasets::check_visible;
use crate::error::{ServiceError, ServiceResult};
use crate::ids::new_id;
use crate::network::NetworkPolicy;
use crate::sandboxes::Sandboxes;
use crate::webhooks::{Draft, EventType};
use lost::{not_live, Ended};

pub use lost::SANDBOX_LOST;
pub use recovery::RecoveryReport;
pub use worker::{Action, INFRA_EXIT_CODE};

/// What the worker of a session knows about its sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    Creating,
    Ready(SandboxId),
    /// Failed to start, closed, expired, or its sandbox died: queued work fails.
    Gone(Ended),
}

struct LiveSession {
    user_id: String,
    /// What the TTL reaper reads; `PATCH /v1/instances/{id}` moves it after the store.
    expires_at: Mutex<DateTime<Utc>>,
    queue: mpsc::Sender<worker::Work>,
    readiness: watch::Sender<Readiness>,
    /// Its recent usage samples, oldest first (`usage::SERIES_POINTS` at most).
    series: Mutex<std::collections::VecDeque<kiln_store::SessionUsage>>,
}

pub struct SessionService {
    store: Arc<dyn Store>,
    sandboxes: Arc<Sandboxes>,
    config: SessionsConfig,
    billing: BillingConfig,
    changes: Arc<Changes>,
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    metrics: crate::metrics::Metrics,
    /// Where session events go (webhooks); set once when the services are wired.
    events: OnceLock<crate::webhooks::Events>,
    /// Told when a session ends, for the snapshot GC (what it stood on may be free now).
    ended: Arc<tokio::sync::Notify>,
    /// Called with a session's id once it has ended here (its exec spools go).
    end_listeners: Mutex<Vec<EndListener>>,
    /// `[network]`, set once when the services are wired (`egress.rs`).
    network: OnceLock<egress::NetworkSettings>,
    /// What sessions' egresses let through and refused.
    egress_book: Arc<crate::network::EgressBook>,
    /// Images this node started sandboxes from lately (its heartbeat reports them).
    recent_images: recent_images::RecentImages,
}

type EndListener = Arc<dyn Fn(&str) + Send + Sync>;

/// What a new session is made from.
#[derive(Debug, Clone, Copy)]
pub enum NewSource<'a> {
    /// The latest version of a dataset's sample, in its environment image.
    Sample {
        dataset: &'a str,
        sample_id: &'a str,
    },
    /// An image in the server's image store, by its reference.
    Image { reference: &'a str },
}

/// A new session request, validated by the caller's shape but not its meaning.
pub struct CreateSession<'a> {
    pub user_id: &'a str,
    pub source: NewSource<'a>,
    pub ttl_minutes: Option<i64>,
    /// An instance's name and labels (checked by [`crate::instances`]); none for Codeset.
    pub name: Option<String>,
    pub labels: Labels,
    /// Limits asked for in place of the server's (checked by [`crate::instances`]).
    pub limits: SessionLimits,
}

impl<'a> CreateSession<'a> {
    /// A Codeset session: a sample, with the server's limits, no name and no labels.
    pub fn sample(
        user_id: &'a str,
        dataset: &'a str,
        sample_id: &'a str,
        ttl_minutes: Option<i64>,
    ) -> Self {
        Self {
            user_id,
            source: NewSource::Sample { dataset, sample_id },
            ttl_minutes,
            name: None,
            labels: Labels::new(),
            limits: SessionLimits::default(),
        }
    }
}

impl SessionService {
    pub fn new(
        store: Arc<dyn Store>,
        sandboxes: Arc<Sandboxes>,
        config: SessionsConfig,
        billing: BillingConfig,
    ) -> Arc<Self> {
        let egress_book = Arc::new(crate::network::EgressBook::default());
        let this = Arc::new(Self {
            store,
            sandboxes,
            config,
            billing,
            changes: Arc::new(Changes::default()),
            live: Mutex::new(HashMap::new()),
            metrics: crate::metrics::Metrics::new(),
            events: OnceLock::new(),
            ended: Arc::new(tokio::sync::Notify::new()),
            end_listeners: Mutex::new(Vec::new()),
            network: OnceLock::new(),
            egress_book: Arc::clone(&egress_book),
            recent_images: Default::default(),
        });
        this.on_end(move |session_id| egress_book.forget(session_id));
        this
    }

    /// Calls `listener` with the id of every session that ends on this server, after its
    /// sandbox is released (a session ended elsewhere is not told here).
    pub fn on_end(&self, listener: impl Fn(&str) + Send + Sync + 'static) {
        self.end_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(listener));
    }

    /// Connects the session events to webhooks (once; later calls are ignored).
    pub fn set_events(&self, events: crate::webhooks::Events) {
        let _ = self.events.set(events);
    }

    /// What a change of a session announces to its owner's webhooks, stored by the store in
    /// the change's own transaction: `event` of the session as the change left it. `None`
    /// when webhooks are not wired (tools without a server).
    fn session_event(
        &self,
        event: fn(&SessionRecord) -> EventType,
    ) -> Option<Box<dyn Announce<SessionRecord> + '_>> {
        let events = self.events.get()?;
        Some(Box::new(events.announcing(
            move |session: &SessionRecord| {
                Some(Draft {
                    user_id: session.user_id.clone(),
                    event: event(session),
                    data: crate::webhooks::session_data(session),
                })
            },
        )))
    }

    /// What a change of a snapshot announces to its owner's webhooks (`snapshot.created`,
    /// `snapshot.deleted`), in the change's own transaction.
    pub(crate) fn snapshot_event(
        &self,
        event: EventType,
    ) -> Option<Box<dyn Announce<kiln_store::SnapshotRecord> + '_>> {
        let events = self.events.get()?;
        Some(Box::new(events.announcing(
            move |snapshot: &kiln_store::SnapshotRecord| {
                Some(Draft {
                    user_id: snapshot.user_id.clone(),
                    event,
                    data: crate::webhooks::snapshot_data(snapshot),
                })
            },
        )))
    }

    /// `session.forked` of `instance_id` and its `forks`, written in the transaction that
    /// retires the fork's own snapshot (the forks stand on their copies by then).
    pub(crate) fn forked_event(
        &self,
        instance_id: &str,
        forks: Vec<String>,
    ) -> Option<Box<dyn Announce<kiln_store::SnapshotRecord> + '_>> {
        let events = self.events.get()?;
        let instance_id = instance_id.to_string();
        Some(Box::new(events.announcing(
            move |snapshot: &kiln_store::SnapshotRecord| {
                Some(Draft {
                    user_id: snapshot.user_id.clone(),
                    event: EventType::SessionForked,
                    data: serde_json::json!({"session_id": instance_id, "forks": forks}),
                })
            },
        )))
    }

    /// `snapshot.restored` of `snapshot`, written in the transaction that records what the
    /// instance restored into stands on (the announcer is made of that instance's id).
    pub(crate) fn restored_event(
        &self,
        snapshot: &kiln_store::SnapshotRecord,
        new_instance: bool,
    ) -> Option<Box<dyn Announce<str> + '_>> {
        let events = self.events.get()?;
        let (user_id, data) = (
            snapshot.user_id.clone(),
            crate::webhooks::snapshot_data(snapshot),
        );
        Some(Box::new(events.announcing(move |instance_id: &str| {
            let mut data = data.clone();
            data["restored_into"] = instance_id.into();
            data["new_instance"] = new_instance.into();
            Some(Draft {
                user_id: user_id.clone(),
                event: EventType::SnapshotRestored,
                data,
            })
        })))
    }

    /// What a verification job's change announces, in the change's transaction: its end
    /// (`verification.completed` with the result, else `verification.error`, a job
    /// cancelled by its session's end included); nothing for a job that has not ended.
    pub(crate) fn job_event(
        &self,
    ) -> Option<Box<dyn Announce<kiln_store::VerificationJobRecord> + '_>> {
        let events = self.events.get()?;
        Some(Box::new(events.announcing(
            |job: &kiln_store::VerificationJobRecord| {
                let event = match job.status {
                    JobStatus::Completed => EventType::VerificationCompleted,
                    JobStatus::Error | JobStatus::Cancelled => EventType::VerificationError,
                    _ => return None,
                };
                Some(Draft {
                    user_id: job.user_id.clone(),
                    event,
                    data: crate::webhooks::verification_data(job),
                })
            },
        )))
    }

    /// Why this server cannot run sessions, when it cannot.
    pub fn unavailable_reason(&self) -> Option<String> {
        self.sandboxes.unavailable_reason()
    }

    pub fn config(&self) -> &SessionsConfig {
        &self.config
    }

    /// On a store shared by several processes (PostgreSQL): every change stored here
    /// wakes the long-polls of the others, and theirs wake this one's.
    pub(crate) fn start_change_feed(&self) {
        if let Some(feed) = self.store.change_feed() {
            self.changes.attach_feed(feed);
        }
    }

    /// The image references this node started sandboxes from lately, newest first.
    pub(crate) fn recent_images(&self) -> Vec<String> {
        self.recent_images.list()
    }

    /// The image a session of this sample would run, for placement (`None` when the
    /// sample cannot be read: the create itself then says why).
    pub async fn image_of_sample(&self, dataset: &str, sample_id: &str) -> Option<String> {
        let sample = self
            .store
            .get_sample(dataset, sample_id, None)
            .await
            .ok()??;
        Some(session_image(dataset, &sample.record))
    }

    /// Whether a long-poll here wakes on changes made by any process on the store, so
    /// that it may be answered by any node.
    pub fn long_polls_wake_across_nodes(&self) -> bool {
        self.changes.heard_across_nodes()
    }

    /// The largest disk a sample may ask for (`runtime.max_disk_mib`).
    fn max_disk_bytes(&self) -> u64 {
        self.sandboxes
            .available()
            .map(|available| available.max_disk_bytes)
            .unwrap_or(0)
    }

    /// The runtime, the limits of a session's sandbox, and where sandboxes run.
    fn runtime(&self) -> ServiceResult<(&Arc<dyn Runtime>, &Limits, &str)> {
        match self.sandboxes.available() {
            Ok(available) => Ok((
                &available.runtime,
                &available.limits,
                available.location.as_str(),
            )),
            Err(why) => Err(ServiceError::Unavailable(format!(
                "sessions are not available on this server: {why}"
            ))),
        }
    }

    pub async fn create(
        self: &Arc<Self>,
        request: CreateSession<'_>,
    ) -> ServiceResult<SessionRecord> {
        let ttl = request
            .ttl_minutes
            .unwrap_or(i64::from(self.config.default_ttl_minutes));
        let max = i64::from(self.config.max_ttl_minutes);
        if !(1..=max).contains(&ttl) {
            return Err(ServiceError::invalid(
                &["ttl_minutes"],
                format!("Input should be between 1 and {max} (minutes)"),
                if ttl < 1 {
                    "greater_than_equal"
                } else {
                    "less_than_equal"
                },
            ));
        }
        // Another org's private dataset is as absent as a missing one (checked before
        // anything else, so the answer is the same on a server without sandboxes).
        if let NewSource::Sample { dataset, sample_id } = &request.source {
            check_visible(self.store.as_ref(), request.user_id, dataset, sample_id).await?;
        }
        let (runtime, base, _) = self.runtime()?;
        let (source, reference, limits, network) =
            self.resolve_source(request.source, base).await?;
        check_source_image(runtime.as_ref(), &reference, &source).await?;
        let limits = Limits {
            cpu_millicores: request
                .limits
                .cpu_millicores
                .map(|m| u32::try_from(m).unwrap_or(u32::MAX))
                .or(limits.cpu_millicores),
            memory_bytes: request.limits.memory_bytes.or(limits.memory_bytes),
            disk_bytes: request.limits.disk_bytes.or(limits.disk_bytes),
            ..limits
        };
        self.check_balance(request.user_id).await?;
        let live = self.store.count_live_sessions(request.user_id).await?;
        if live >= u64::from(self.config.max_live_sessions_per_user) {
            return Err(ServiceError::LimitExceeded(format!(
                "you have {live} live sessions (the limit is {}); close one first",
                self.config.max_live_sessions_per_user
            )));
        }
        // Admission before the 201: a full node refuses now (503), not the session later.
        // The worker's create takes the reservation over; a destroy gives it back.
        let session_id = new_id("ses");
        let sandbox_id = SandboxId::new(session_id.clone())
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        runtime
            .reserve(&sandbox_id, &limits)
            .map_err(ServiceError::admission)?;
        let now = Utc::now();
        let record = self
            .insert_session(&NewSession {
                session_id,
                user_id: request.user_id.to_string(),
                source,
                name: request.name,
                labels: request.labels,
                limits: SessionLimits {
                    cpu_millicores: limits.cpu_millicores.map(u64::from),
                    memory_bytes: limits.memory_bytes,
                    disk_bytes: limits.disk_bytes,
                },
                requested_at: now,
                expires_at: now + chrono::Duration::minutes(ttl),
            })
            .await
            .inspect_err(|_| runtime.release(&sandbox_id))?;
        self.metrics.session_created();
        let live = self.start_worker(&record, Readiness::Creating);
        let this = self.clone();
        let session = record.clone();
        let source = SandboxSource::Image(reference);
        // In the request's span: the sandbox's start is part of the request's trace.
        tokio::spawn(
            async move {
                this.start_sandbox(session, source, limits, network, live)
                    .await
            }
            .in_current_span(),
        );
        Ok(record)
    }

    /// The stored source of a new session, the image its sandbox runs, its limits before
    /// the caller's (a sample's, with the disk it asks for, or the server's) and its
    /// network policy (a sample's; `egress.rs`).
    async fn resolve_source(
        &self,
        source: NewSource<'_>,
        base: &Limits,
    ) -> ServiceResult<(SessionSource, String, Limits, Option<Arc<NetworkPolicy>>)> {
        match source {
            NewSource::Sample { dataset, sample_id } => {
                let sample = self
                    .store
                    .get_sample(dataset, sample_id, None)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::not_found(format!("sample {dataset}/{sample_id}"))
                    })?;
                let reference = session_image(dataset, &sample.record);
                let limits =
                    sample_limits::sample_limits(&sample.record, base, self.max_disk_bytes())?;
                // A list that cannot be read refuses the session now, not its start.
                let network = self.sample_network(dataset, &sample.record)?.map(Arc::new);
                let source = SessionSource::Sample {
                    dataset: dataset.to_string(),
                    sample_id: sample_id.to_string(),
                    version: sample.version,
                };
                Ok((source, reference, limits, network))
            }
            NewSource::Image { reference } => Ok((
                SessionSource::Image {
                    reference: reference.to_string(),
                },
                reference.to_string(),
                *base,
                None,
            )),
        }
    }

    /// Starts the session's sandbox and records the outcome.
    #[tracing::instrument(skip_all, fields(session = %session.session_id))]
    async fn start_sandbox(
        self: Arc<Self>,
        session: SessionRecord,
        source: SandboxSource,
        limits: Limits,
        network: Option<Arc<NetworkPolicy>>,
        live: Arc<LiveSession>,
    ) {
        let Ok((runtime, _, location)) = self.runtime() else {
            return;
        };
        let id = match SandboxId::new(session.session_id.clone()) {
            Ok(id) => id,
            Err(e) => {
                return self
                    .fail_start(&session, &live, "invalid_session_id", &e.to_string())
                    .await
            }
        };
        let image = match &source {
            SandboxSource::Image(reference) => Some(reference.clone()),
            SandboxSource::Snapshot(_) => None,
        };
        let mut spec = SandboxSpec::new(id.clone(), source);
        spec.limits = limits;
        spec.hostname = "kiln".into();
        // A cluster that ends sandboxes itself ends this one with its session.
        // (The live expiry: an instance's TTL may have moved since the record was read.)
        let expires_at = *live.expires_at.lock().unwrap_or_else(|p| p.into_inner());
        spec.expires_at = Some(expires_at.into());
        self.attach_egress(&session.session_id, network, &mut spec);
        let started = std::time::Instant::now();
        let created = runtime.create(spec).await;
        match &created {
            Ok(_) => {
                self.metrics.sandbox_created(started.elapsed());
                if let Some(image) = &image {
                    self.recent_images.note(image);
                }
            }
            Err(_) => self.metrics.sandbox_create_failed(),
        }
        let announce = self.session_event(|_| EventType::SessionReady);
        match created {
            Ok(_) => match self
                .store
                .mark_session_ready(
                    &session.session_id,
                    id.as_str(),
                    location,
                    Utc::now(),
                    announce.as_deref(),
                )
                .await
            {
                Ok(Some(_)) => {
                    live.readiness.send_replace(Readiness::Ready(id.clone()));
                    self.watch_sandbox(&session.session_id, id);
                    self.changes.notify(&session.session_id);
                }
                // Closed (or failed) while the sandbox was starting: it must not outlive that.
                Ok(None) => self.destroy_sandbox(&id).await,
                Err(e) => {
                    self.destroy_sandbox(&id).await;
                    self.fail_start(&session, &live, "store_error", &e.to_string())
                        .await;
                }
            },
            Err(e) => {
                tracing::warn!(session = %session.session_id, error = %e, "sandbox failed to start");
                self.fail_start(&session, &live, "sandbox_start_failed", &e.to_string())
                    .await;
            }
        }
        self.changes.notify(&session.session_id);
    }

    async fn fail_start(
        &self,
        session: &SessionRecord,
        live: &LiveSession,
        code: &str,
        message: &str,
    ) {
        let announce = self.session_event(|_| EventType::SessionError);
        match self
            .store
            .mark_session_error(
                &session.session_id,
                code,
                message,
                Utc::now(),
                announce.as_deref(),
            )
            .await
        {
            Ok(Some(_)) => self.metrics.session_ended(SessionStatus::Error),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(session = %session.session_id, error = %e, "cannot record a failed start")
            }
        }
        live.readiness
            .send_replace(Readiness::Gone(Ended::closed(format!(
                "the session failed to start: {message}"
            ))));
        self.forget(&session.session_id);
        self.changes.notify(&session.session_id);
    }

    fn start_worker(
        self: &Arc<Self>,
        session: &SessionRecord,
        readiness: Readiness,
    ) -> Arc<LiveSession> {
        let (queue, receiver) = mpsc::channel(self.config.max_queued_interactions.max(1));
        let (readiness, watcher) = watch::channel(readiness);
        let live = Arc::new(LiveSession {
            user_id: session.user_id.clone(),
            expires_at: Mutex::new(session.expires_at),
            queue,
            readiness,
            series: Mutex::default(),
        });
        self.lock_live()
            .insert(session.session_id.clone(), live.clone());
        let ctx = worker::WorkerContext {
            service: Arc::downgrade(self),
            store: self.store.clone(),
            runtime: self.runtime().ok().map(|(r, ..)| r.clone()),
            changes: self.changes.clone(),
            session_id: session.session_id.clone(),
            max_output_bytes: self.config.max_output_bytes,
        };
        tokio::spawn(worker::run(ctx, receiver, watcher));
        live
    }

    /// The caller's session. While it is `creating`, waits (bounded) for it to change.
    pub async fn get(
        &self,
        user_id: &str,
        session_id: &str,
        wait: bool,
    ) -> ServiceResult<SessionRecord> {
        let timeout = if wait {
            self.long_poll()
        } else {
            Duration::ZERO
        };
        self.changes
            .wait_for(session_id, timeout, || async {
                let session = self.owned(user_id, session_id).await?;
                let done = session.status != SessionStatus::Creating;
                Ok((session, done))
            })
            .await
    }

    pub async fn list(
        &self,
        user_id: &str,
        limit: u64,
        offset: u64,
    ) -> ServiceResult<(Vec<SessionRecord>, u64)> {
        Ok(self.store.list_sessions(user_id, limit, offset).await?)
    }

    /// Closes the caller's session: the sandbox is destroyed before this returns.
    pub async fn close(&self, user_id: &str, session_id: &str) -> ServiceResult<SessionRecord> {
        let session = self.owned(user_id, session_id).await?;
        if !session.status.is_live() {
            return Err(not_live(&session, "it cannot be closed again"));
        }
        match self.end(session_id, SessionStatus::Closed, None).await? {
            Some(ended) => Ok(ended),
            None => {
                let now = self.owned(user_id, session_id).await?;
                Err(not_live(&now, "it cannot be closed again"))
            }
        }
    }

    /// Ends a live session (close, expiry, the balance running out) and bills its time, in
    /// one store transaction. Exactly one of racing callers gets `Some` and releases the
    /// sandbox. `reason` (code, message) becomes the session's error.
    async fn end(
        &self,
        session_id: &str,
        status: SessionStatus,
        reason: Option<(&str, String)>,
    ) -> ServiceResult<Option<SessionRecord>> {
        let gone = match (&reason, status) {
            (Some((code, message)), _) => Ended {
                lost: *code == SANDBOX_LOST,
                message: message.clone(),
            },
            (None, SessionStatus::Terminated) => {
                Ended::closed("the session expired (its TTL ended)")
            }
            (None, _) => Ended::closed("the session was closed"),
        };
        let cpu_micros = self.sample_before_end(session_id).await;
        let Some(ended) = self
            .end_billed(
                session_id,
                status,
                Utc::now(),
                false,
                reason.map(|(c, m)| (c.to_string(), m)),
            )
            .await?
        else {
            return Ok(None);
        };
        self.metrics.session_ended(status);
        self.metrics.ended_cpu(cpu_micros.unwrap_or(0));
        if let Some(live) = self.forget(session_id) {
            live.readiness.send_replace(Readiness::Gone(gone.clone()));
        }
        let (job_status, job_code) = if gone.lost {
            (JobStatus::Error, SANDBOX_LOST)
        } else {
            (JobStatus::Cancelled, "session_ended")
        };
        self.end_jobs(Some(session_id), job_status, job_code, &gone.message)
            .await?;
        if let Some(sandbox) = ended
            .sandbox_id
            .as_deref()
            .and_then(|s| SandboxId::new(s).ok())
        {
            self.destroy_sandbox(&sandbox).await;
        }
        let listeners = self
            .end_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for listener in listeners {
            listener(session_id);
        }
        self.ended.notify_one();
        self.changes.notify(session_id);
        Ok(Some(ended))
    }

    /// Stores a new session as this process's node's (`sessions.node_id`), announced as
    /// `session.created` with it.
    async fn insert_session(&self, session: &NewSession) -> ServiceResult<SessionRecord> {
        let announce = self.session_event(|_| EventType::SessionCreated);
        let announce = announce.as_deref();
        Ok(match self.sandboxes.node_id() {
            Some(node) => {
                self.store
                    .insert_session_on(session, node, announce)
                    .await?
            }
            None => self.store.insert_session(session, announce).await?,
        })
    }

    async fn destroy_sandbox(&self, id: &SandboxId) {
        if let Ok((runtime, ..)) = self.runtime() {
            if let Err(e) = runtime.destroy(id).await {
                tracing::error!(sandbox = %id, error = %e, "cannot destroy sandbox");
            }
        }
    }

    /// Queues an interaction; returns it as stored (unfinished).
    pub async fn submit(
        &self,
        user_id: &str,
        session_id: &str,
        action: Action,
    ) -> ServiceResult<InteractionRecord> {
        self.submit_inner(user_id, session_id, action, None).await
    }

    /// Queues an interaction and waits for its outcome (str_replace and upload answer
    /// synchronously in the contract).
    pub async fn submit_and_wait(
        &self,
        user_id: &str,
        session_id: &str,
        action: Action,
    ) -> ServiceResult<(InteractionRecord, InteractionOutcome)> {
        let (tx, rx) = oneshot::channel();
        let record = self
            .submit_inner(user_id, session_id, action, Some(tx))
            .await?;
        match rx.await {
            Ok(Ok(outcome)) => Ok((record, outcome)),
            // Queued work of a session that ended (closed, expired, sandbox lost) first.
            Ok(Err(ended)) => Err(ended.error(session_id)),
            Err(_) => {
                let session = self.owned(user_id, session_id).await?;
                if session.status.is_live() {
                    Err(ServiceError::Internal(
                        "the session's worker stopped".into(),
                    ))
                } else {
                    Err(not_live(&session, "commands need a live session"))
                }
            }
        }
    }

    async fn submit_inner(
        &self,
        user_id: &str,
        session_id: &str,
        action: Action,
        reply: Option<worker::Reply>,
    ) -> ServiceResult<InteractionRecord> {
        action.check(&self.config)?;
        let session = self.owned(user_id, session_id).await?;
        if !session.status.is_live() {
            return Err(not_live(&session, "commands need a live session"));
        }
        let live = self.lock_live().get(session_id).cloned();
        let Some(live) = live else {
            // Ended between the two reads: say how, as for any later call.
            let now = self.owned(user_id, session_id).await?;
            return Err(if now.status.is_live() {
                ServiceError::Conflict(format!("session {session_id} is no longer running"))
            } else {
                not_live(&now, "commands need a live session")
            });
        };
        let permit = live.queue.try_reserve().map_err(|_| {
            ServiceError::LimitExceeded(format!(
                "session {session_id} already has {} interactions waiting; wait for some to finish",
                self.config.max_queued_interactions
            ))
        })?;
        let (kind, request) = action.describe();
        self.metrics.interaction(kind.as_str());
        let record = self
            .store
            .insert_interaction(&NewInteraction {
                interaction_id: new_id("int"),
                session_id: session_id.to_string(),
                kind,
                created_at: Utc::now(),
                request,
            })
            .await?;
        permit.send(worker::Work::Interaction {
            interaction_id: record.interaction_id.clone(),
            action,
            reply,
            cause: tracing::Span::current(),
        });
        Ok(record)
    }

    /// The caller's interaction; waits (bounded) while it is unfinished.
    pub async fn interaction(
        &self,
        user_id: &str,
        session_id: &str,
        interaction_id: &str,
        wait: bool,
    ) -> ServiceResult<InteractionRecord> {
        let timeout = if wait {
            self.long_poll()
        } else {
            Duration::ZERO
        };
        // One query per look, ownership included: this is every command's result poll.
        self.changes
            .wait_for(session_id, timeout, || async {
                let found = match session_id.contains('\0') || interaction_id.contains('\0') {
                    true => None,
                    false => {
                        self.store
                            .get_users_interaction(user_id, session_id, interaction_id)
                            .await?
                    }
                };
                let Some(record) = found else {
                    // Which is missing, the caller's session or its interaction.
                    self.owned(user_id, session_id).await?;
                    return Err(ServiceError::not_found(format!(
                        "interaction {interaction_id}"
                    )));
                };
                let done = record.outcome.is_some();
                Ok((record, done))
            })
            .await
    }

    /// A session of `user_id`; anyone else's is "not found".
    pub async fn owned(&self, user_id: &str, session_id: &str) -> ServiceResult<SessionRecord> {
        // No id holds a NUL, and PostgreSQL refuses one as a parameter (a 500, not a 404).
        let found = match session_id.contains('\0') {
            true => None,
            false => self.store.get_session(session_id).await?,
        };
        match found {
            Some(s) if s.user_id == user_id => Ok(s),
            _ => Err(ServiceError::not_found(format!("session {session_id}"))),
        }
    }

    fn long_poll(&self) -> Duration {
        Duration::from_secs(self.config.long_poll_secs)
    }

    /// Moves a live session's expiry, as the TTL reaper sees it, to what the store now
    /// holds, and the end its sandbox's cluster enforces (`SandboxSpec::expires_at`). A
    /// session that is not live any more has nothing to move.
    pub(crate) async fn set_live_expiry(&self, session_id: &str, at: DateTime<Utc>) {
        let Some(live) = self.lock_live().get(session_id).cloned() else {
            return;
        };
        *live.expires_at.lock().unwrap_or_else(|p| p.into_inner()) = at;
        let sandbox = match &*live.readiness.borrow() {
            Readiness::Ready(id) => id.clone(),
            _ => return,
        };
        if let Ok((runtime, _, _)) = self.runtime() {
            // The reaper still ends the session at `at`; a cluster's earlier end would
            // only kill the sandbox under it, so say so loudly.
            if let Err(e) = runtime.set_expiry(&sandbox, at.into()).await {
                tracing::warn!(session = %session_id, error = %e, "cannot move the sandbox's expiry");
            }
        }
    }

    fn forget(&self, session_id: &str) -> Option<Arc<LiveSession>> {
        self.lock_live().remove(session_id)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveSession>>> {
        // Every critical section is a single map operation: a poisoned map is consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live sessions per user, for diagnostics.
    pub fn live_count(&self, user_id: &str) -> usize {
        self.lock_live()
            .values()
            .filter(|l| l.user_id == user_id)
            .count()
    }
}

/// Refuses a session whose image the backend lacks, before it is accepted: a sample's is a
/// conflict (build or import it), an image the caller named is an invalid input.
async fn check_source_image(
    runtime: &dyn Runtime,
    reference: &str,
    source: &SessionSource,
) -> ServiceResult<()> {
    runtime
        .check_image(reference)
        .await
        .map_err(|e| match (e, source) {
            (
                RuntimeError::ImageNotFound { .. },
                SessionSource::Sample {
                    dataset, sample_id, ..
                },
            ) => ServiceError::Conflict(format!(
                "the environment image {reference} of sample {dataset}/{sample_id} is not on \
                     this server yet: a server that builds the demo images at start logs its \
                     progress; otherwise build them with `kiln images build-demo`, or import the \
                     image with `kiln images import`"
            )),
            (RuntimeError::ImageNotFound { .. }, SessionSource::Image { .. }) => {
                ServiceError::invalid(
                    &["image"],
                    format!(
                        "there is no image {reference} in this server's image store \
                         (`kiln images list`)"
                    ),
                    "image_not_found",
                )
            }
            (other, _) => {
                ServiceError::Internal(format!("cannot look the image {reference} up: {other}"))
            }
        })
}

/// Where a path given by a caller points inside the sandbox: relative paths are taken
/// from `/testbed`, where the repository is. (`..` cannot leave the sandbox: the agent
/// resolves paths inside the sandbox's own root.)
pub fn sandbox_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/testbed/{path}")
    }
}

/// The image a sample's sessions run in: the record's `sample_image` when it names one
/// (samples that share an environment, or datasets built elsewhere), else the sample's own
/// image as `kiln images build-demo` names it.
pub fn session_image(dataset: &str, record: &kiln_store::SampleRecord) -> String {
    match record.extra.get("sample_image").and_then(|v| v.as_str()) {
        Some(image) if !image.trim().is_empty() => image.to_string(),
        _ => sample_image_reference(dataset, &record.instance_id),
    }
}

/// The image `kiln images build-demo` makes for a sample: its base environment plus its
/// repository at base_commit under /testbed.
pub fn sample_image_reference(dataset: &str, instance_id: &str) -> String {
    format!("{dataset}/sample/{instance_id}:1").to_ascii_lowercase()
}

/// The request half of an interaction, as the contract shows it.
impl Action {
    fn describe(&self) -> (InteractionKind, serde_json::Value) {
        match self {
            Action::Exec {
                command,
                timeout_secs,
            } => (
                InteractionKind::ExecCommand,
                json!({"command": command, "command_timeout": timeout_secs}),
            ),
            Action::StrReplace { path, old, new } => (
                InteractionKind::StringReplace,
                json!({"file_path": path, "str_to_replace": old, "str_to_insert": new}),
            ),
            Action::Upload {
                path,
                content,
                executable,
            } => (
                InteractionKind::FileUpload,
                json!({"file_path": path, "size_bytes": content.len(), "make_executable": executable}),
            ),
        }
    }
}
