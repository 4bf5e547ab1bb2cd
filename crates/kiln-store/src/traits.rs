//! The storage interface, split by area. [`Store`] is their union: what services hold
//! (`Arc<dyn Store>`), and what each backend implements by implementing every area.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    AgentJobCursor, AgentJobRecord, AgentJobUpdate, ApiKeyRecord, Balance, Dataset, EndedSession,
    ImportSummary, InteractionOutcome, InteractionRecord, JobUpdate, NewAgentJob, NewApiKey,
    NewInteraction, NewRefreshToken, NewSession, NewTransaction, NewUser, NewVerificationJob,
    RefreshOutcome, Result, Sample, SampleImport, SamplePage, SampleQuery, SessionChange,
    SessionEnd, SessionFilter, SessionRecord, SessionStatus, SessionUsage, Transaction,
    TransactionKind, TransactionPage, TransactionQuery, User, VerificationJobRecord,
};
use crate::{
    AttemptResult, DeliveryRecord, DeliveryStatus, NewPortForward, NewWebhookEvent,
    PortForwardRecord, WebhookRecord, WebhookUpdate,
};

/// The storage interface. Every method is one atomic operation: an implementation
/// must never leave a half-applied change visible (imports in particular).
///
/// Conventions shared by both implementations (and checked by the suite in
/// `tests/store_suite`, which runs every scenario against both):
/// - Instants are kept in UTC with microsecond precision; finer digits are truncated on
///   write, so a value read back equals the value written truncated to microseconds.
/// - Unique-key violations are [`crate::StoreError::Conflict`] naming the field (`"user_id"`,
///   `"github_id"`, `"key_id"`, `"key_hash"`, `"token_id"`, `"sample_id"`).
/// - Names are ordered by their bytes (`"B" < "_" < "a"`) on both backends.
/// - Updates of a row that does not exist (`set_last_login` of an unknown user, …) are
///   no-ops, not errors; conditional ones (`end_session`, `complete_interaction`, …) report
///   it as `None` / `false`.
/// - Inserting a record that refers to one that does not exist (a session of an unknown
///   user, an interaction of an unknown session, …) is [`crate::StoreError::Missing`].
///
/// Each area's methods are in its own trait, `Store` being their union. On an
/// `Arc<dyn Store>` all of them are callable without importing anything; on a concrete store
/// type, import [`crate::prelude`].
pub trait Store:
    Backend
    + AccountStore
    + GithubStore
    + CatalogStore
    + SessionStore
    + VerificationStore
    + BillingStore
    + AgentJobStore
    + WebhookStore
    + PortForwardStore
    + SnapshotStore
    + ExecStore
    + BaseImageStore
    + NodeStore
    + NodeRegistryStore
    + PasswordAccountStore
    + MfaStore
    + OrgStore
    + OrgSecurityStore
    + 'static
{
}

impl<T> Store for T where
    T: Backend
        + AccountStore
        + GithubStore
        + CatalogStore
        + SessionStore
        + VerificationStore
        + BillingStore
        + AgentJobStore
        + WebhookStore
        + PortForwardStore
        + SnapshotStore
        + ExecStore
        + BaseImageStore
        + NodeStore
        + NodeRegistryStore
        + PasswordAccountStore
        + MfaStore
        + OrgStore
        + OrgSecurityStore
        + ?Sized
        + 'static
{
}

/// Which store this is, and whether it answers.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Which backend this is ("sqlite" or "postgres"), for logs and `/health`.
    fn backend(&self) -> &'static str;

    /// Cheap liveness check of the connection.
    async fn ping(&self) -> Result<()>;

    /// The feed other processes on this database hear changes through (PostgreSQL's
    /// LISTEN/NOTIFY); `None` on SQLite, which one process serves.
    fn change_feed(&self) -> Option<std::sync::Arc<dyn crate::ChangeFeed>> {
        None
    }
}

/// Users, their API keys and their refresh tokens.
#[async_trait]
pub trait AccountStore: Send + Sync {
    // ---- users -------------------------------------------------------------------
    /// Creates an active user. `Conflict("user_id")` or `Conflict("github_id")` if taken;
    /// any number of users may have no `github_id`.
    async fn create_user(&self, user: &NewUser) -> Result<User>;
    async fn get_user(&self, user_id: &str) -> Result<Option<User>>;
    async fn get_user_by_github_id(&self, github_id: &str) -> Result<Option<User>>;
    async fn count_users(&self) -> Result<u64>;
    async fn set_terms_accepted(&self, user_id: &str, at: DateTime<Utc>) -> Result<()>;
    async fn set_last_login(&self, user_id: &str, at: DateTime<Utc>) -> Result<()>;

    // ---- API keys ------------------------------------------------------------------
    /// Stores a new key. Only the hash of the secret is stored, never the secret.
    /// `Conflict("key_id")` or `Conflict("key_hash")` if taken; the user must exist.
    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord>;
    /// The active key with this hash, its user, its organization when it is an org key,
    /// and the user's default membership: not revoked, and either without expiry or with
    /// `now < expires_at` (a key is dead from its `expires_at` on). Whether the user is
    /// active is the caller's to check. One query: this runs on every API-key request.
    async fn find_api_key(
        &self,
        key_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::FoundApiKey>>;
    /// All keys of a user, revoked ones included, oldest (`created_at`) first.
    async fn list_api_keys(&self, user_id: &str) -> Result<Vec<ApiKeyRecord>>;
    /// Revokes the user's key, recording `at`. `false`, changing nothing, if the key does
    /// not exist, belongs to another user, or is already revoked. An expired key can still
    /// be revoked.
    async fn revoke_api_key(&self, user_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Records a use of the key (`last_used_at`).
    async fn touch_api_key(&self, key_id: &str, at: DateTime<Utc>) -> Result<()>;

    // ---- refresh tokens -------------------------------------------------------------
    /// `Conflict("token_id")` if the id is taken.
    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()>;
    /// Atomically marks the token used. Exactly one caller can ever get `Consumed`
    /// for a given token id, even under concurrency: the others get `Reused`.
    ///
    /// In order: `Unknown` if there is no such token; `Reused` if it was already used or
    /// its family is revoked (even if it has expired since: a replay stays a replay);
    /// `Expired` if `now >= expires_at` (the token is left unused); else `Consumed`.
    /// A family is revoked once [`AccountStore::revoke_refresh_family`] ran for it, which also
    /// covers tokens inserted into the family afterwards.
    async fn consume_refresh_token(
        &self,
        token_id: &str,
        now: DateTime<Utc>,
    ) -> Result<RefreshOutcome>;
    /// Revokes every token of a family (used when a reuse is detected).
    async fn revoke_refresh_family(&self, family_id: &str, at: DateTime<Utc>) -> Result<()>;
}

/// Users' GitHub identities and sealed access tokens.
#[async_trait]
pub trait GithubStore: Send + Sync {
    // ---- github ------------------------------------------------------------------------
    /// Records what GitHub says of a returning user: their login and display name (either
    /// can change on GitHub). The updated user, or `None` for an unknown user.
    async fn update_github_profile(
        &self,
        user_id: &str,
        github_login: &str,
        name: &str,
    ) -> Result<Option<User>>;
    /// Stores (or replaces) the user's GitHub access token, as the caller sealed it: the
    /// store never sees it in the clear. `Missing("user")` for an unknown user.
    async fn put_github_token(
        &self,
        user_id: &str,
        sealed_token: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// The user's sealed GitHub token, if they ever signed in with GitHub.
    async fn get_github_token(&self, user_id: &str) -> Result<Option<String>>;
}

/// Datasets and the versioned samples in them.
#[async_trait]
pub trait CatalogStore: Send + Sync {
    // ---- datasets and samples ------------------------------------------------------
    /// All datasets, ordered by name, with the count of their samples (each sample
    /// counted once, whatever its number of versions).
    async fn list_datasets(&self) -> Result<Vec<Dataset>>;
    async fn get_dataset(&self, name: &str) -> Result<Option<Dataset>>;
    /// The owner of a dataset without counting its samples: `None` when there is no such
    /// dataset, `Some(None)` when it is public (the hot path of every session create).
    async fn dataset_owner(&self, name: &str) -> Result<Option<Option<String>>>;
    /// Makes a dataset private to an account (an organization's), or public (`None`);
    /// false when there is no such dataset.
    async fn set_dataset_owner(&self, name: &str, owner_user_id: Option<&str>) -> Result<bool>;
    /// Creates the dataset if needed (`created_at = import.now`; an existing dataset keeps
    /// its `created_at`, and its description when `description` is `None`) and inserts
    /// every sample as a new version: `max(version) + 1`, or 1 for a new sample, which
    /// becomes the `latest` in place of the previous one. `created` counts new samples,
    /// `updated` new versions of existing ones.
    ///
    /// All in one transaction: on any error nothing is imported, the dataset included. A
    /// `sample_id` appearing twice in one import is `Conflict("sample_id")`. Concurrent
    /// imports into one dataset are serialized.
    async fn import_samples(&self, import: &SampleImport) -> Result<ImportSummary>;
    /// Latest versions only, ordered by (dataset, sample_id). `dataset` filters exactly;
    /// `search` is a substring of `instance_id`, ignoring the case of ASCII letters, with
    /// `%`, `_` and `\` matched literally. `limit`/`offset` select the page; `total`
    /// counts every match.
    async fn list_samples(&self, query: &SampleQuery) -> Result<SamplePage>;
    /// One sample; the latest version when `version` is `None`, else that version
    /// (latest or not).
    async fn get_sample(
        &self,
        dataset: &str,
        sample_id: &str,
        version: Option<i64>,
    ) -> Result<Option<Sample>>;
}

/// Sessions and the interactions run in them.
#[async_trait]
pub trait SessionStore: Send + Sync {
    // ---- sessions -------------------------------------------------------------------
    /// Inserts a session in `Creating`. `Conflict("session_id")` if taken;
    /// `Missing("user or sample version")` unless the user and, for a sample session, that
    /// exact version of the sample exist. Stores what `announce` makes of it with it.
    async fn insert_session(
        &self,
        session: &NewSession,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<SessionRecord>;
    async fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>>;
    /// A page of the user's sessions made from a sample (the Codeset listing: instances
    /// made from an image are left out), newest `requested_at` first (ties: greater
    /// `session_id`, by bytes, first), and the total count of the user's sessions; both
    /// from one snapshot.
    async fn list_sessions(
        &self,
        user_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)>;
    // ---- instances (the /v1 view of sessions) ----------------------------------------
    /// Like [`SessionStore::list_sessions`] (which lists sample sessions only), over the
    /// user's sessions that match `filter`; the total counts the matches.
    async fn list_instances(
        &self,
        user_id: &str,
        filter: &SessionFilter,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<SessionRecord>, u64)>;
    /// Applies `change` to the session. `None`, changing nothing, for an unknown session,
    /// or when `change.expires_at` is set and the session is no longer live.
    async fn change_session(
        &self,
        session_id: &str,
        change: &SessionChange,
    ) -> Result<Option<SessionRecord>>;

    /// Sessions of the user in `Creating` or `Ready`.
    async fn count_live_sessions(&self, user_id: &str) -> Result<u64>;
    /// All sessions in any of `statuses` (start-up reconciliation, the TTL reaper), oldest
    /// `requested_at` first. None for an empty `statuses`.
    async fn list_sessions_in(&self, statuses: &[SessionStatus]) -> Result<Vec<SessionRecord>>;
    /// `Creating → Ready`, recording the sandbox. `None` if the session was not
    /// `Creating` any more (e.g. closed meanwhile): the caller must then destroy the sandbox.
    /// Stores what `announce` makes of the changed session with the change.
    async fn mark_session_ready(
        &self,
        session_id: &str,
        sandbox_id: &str,
        location: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<SessionRecord>>;
    /// `Creating → Error`, recording the code and message, and `at` as `ended_at`. `None`
    /// if the session was not `Creating` (or does not exist). Stores what `announce` makes
    /// of the changed session with the change.
    async fn mark_session_error(
        &self,
        session_id: &str,
        code: &str,
        message: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<SessionRecord>>;
    /// `Creating | Ready → Closed | Terminated`, setting `ended_at = at`, atomically: of
    /// several racing callers (close and expiry) exactly one gets `Some` — the one that must
    /// release the sandbox and bill. The others, and any call on a session already ended
    /// (or unknown), get `None`. Any `status` other than `Closed` or `Terminated` is
    /// [`crate::StoreError::Invalid`].
    async fn end_session(
        &self,
        session_id: &str,
        status: SessionStatus,
        at: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>>;
    /// Stores a usage sample of the session's sandbox, whatever the session's status (the
    /// last sample is taken after it ended, before its sandbox is destroyed). A field the
    /// sample lacks keeps its stored value; `pids_peak` keeps the highest seen. `false`,
    /// changing nothing, for an unknown session or a sample older than the stored one.
    async fn record_session_usage(&self, session_id: &str, usage: &SessionUsage) -> Result<bool>;

    // ---- interactions ----------------------------------------------------------------
    /// Inserts an unfinished interaction with the next `seq` of its session: 1, 2, 3…
    /// without gaps or duplicates, even for concurrent inserts into one session (a failed
    /// insert uses no number). `Conflict("interaction_id")` if taken, `Missing("session")`
    /// for an unknown session. Whether the session is still live is the caller's to check.
    async fn insert_interaction(&self, interaction: &NewInteraction) -> Result<InteractionRecord>;
    /// Records the outcome. `false`, changing nothing, if it already had one (an outcome is
    /// never overwritten; of racing callers exactly one gets `true`) or the interaction does
    /// not exist.
    async fn complete_interaction(
        &self,
        interaction_id: &str,
        outcome: &InteractionOutcome,
    ) -> Result<bool>;
    /// The interaction, if it exists, belongs to this session, and the session to
    /// `user_id`: one query for a caller's read (a long-poll repeats it).
    async fn get_users_interaction(
        &self,
        user_id: &str,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>>;
    /// The interaction, if it exists and belongs to this session.
    async fn get_interaction(
        &self,
        session_id: &str,
        interaction_id: &str,
    ) -> Result<Option<InteractionRecord>>;
    /// Interactions without an outcome, across all sessions, oldest `created_at` first
    /// (restart recovery).
    async fn list_unfinished_interactions(&self) -> Result<Vec<InteractionRecord>>;
    /// Output retention: empties stdout and stderr of at most `limit` interactions that
    /// finished before `finished_before` and still hold their output, oldest first, and
    /// sets their `output_expired_at` to `at`. Returns how many it trimmed (fewer than
    /// `limit`: none are left).
    async fn expire_interaction_output(
        &self,
        finished_before: DateTime<Utc>,
        at: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64>;
}

/// Verification jobs of sessions.
#[async_trait]
pub trait VerificationStore: Send + Sync {
    // ---- verification jobs -----------------------------------------------------------
    /// Inserts a job in `Pending`. `Conflict("job_id")` if taken, `Missing("session or
    /// user")` unless both exist.
    async fn insert_verification_job(
        &self,
        job: &NewVerificationJob,
    ) -> Result<VerificationJobRecord>;
    /// The job, if it exists and belongs to this session.
    async fn get_verification_job(
        &self,
        session_id: &str,
        job_id: &str,
    ) -> Result<Option<VerificationJobRecord>>;
    /// Applies `update` unless the job is already finished or does not exist (then `None`,
    /// changing nothing; of racing updates that finish a job, exactly one applies). Moving
    /// to `Starting` or `Running` sets `started_at` to `update.at` unless already set; to a
    /// finished status sets `completed_at`. `result` and the error fields replace the
    /// stored ones when `Some`. The order of moves is the caller's to respect. Stores what
    /// `announce` makes of the changed job with the change.
    async fn update_verification_job(
        &self,
        job_id: &str,
        update: &JobUpdate,
        announce: Announcing<'_, VerificationJobRecord>,
    ) -> Result<Option<VerificationJobRecord>>;
    /// Unfinished jobs, across all sessions, oldest `created_at` first (restart recovery,
    /// cancellation on close).
    async fn list_unfinished_verification_jobs(&self) -> Result<Vec<VerificationJobRecord>>;
    /// A session's jobs, newest `created_at` first (then `job_id`), after `after`; at most
    /// `limit`.
    async fn list_verification_jobs(
        &self,
        session_id: &str,
        after: Option<&crate::VerificationCursor>,
        limit: u64,
    ) -> Result<Vec<VerificationJobRecord>>;
}

/// The ledger, Stripe credits, and the sessions' end-with-charge and heartbeats.
#[async_trait]
pub trait BillingStore: Send + Sync {
    // ---- billing ----
    /// Appends a transaction to the ledger. With a `reference`, at most one transaction of
    /// a kind per reference ever exists: `None`, writing nothing, when one does (a retried
    /// charge or refund). `Missing("user")` for an unknown user, `Conflict("transaction_id")`
    /// if the id is taken.
    async fn insert_transaction(&self, transaction: &NewTransaction)
        -> Result<Option<Transaction>>;
    /// Records a Stripe event and the credit it brings, together: `None`, writing no credit,
    /// when the event was already recorded or the credit's reference already credited.
    async fn record_stripe_credit(
        &self,
        event_id: &str,
        credit: &NewTransaction,
    ) -> Result<Option<Transaction>>;
    /// The transaction of this kind with this reference, if one was written.
    async fn find_transaction(
        &self,
        kind: TransactionKind,
        reference: &str,
    ) -> Result<Option<Transaction>>;
    /// The user's balance and totals, summed over the ledger (zeros for no transactions).
    async fn balance(&self, user_id: &str) -> Result<Balance>;
    /// A page of the user's ledger, newest first, and per-kind totals of the matches; both
    /// from one snapshot.
    async fn list_transactions(&self, query: &TransactionQuery) -> Result<TransactionPage>;
    /// [`SessionStore::end_session`] and the session's usage charge in one transaction: of racing
    /// callers exactly one gets `Some`, and a session is charged once, for its time from
    /// `ready_at` to its `ended_at` (see [`SessionEnd::at_last_heartbeat`]), rounded up to
    /// the cent (no charge for a session that never became ready). `end.reason`, if any,
    /// becomes the session's error. Stores what `announce` makes of the ended session in
    /// the same transaction.
    async fn end_session_billed(
        &self,
        end: &SessionEnd,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<Option<EndedSession>>;
    /// Records `at` as the last time these sessions' sandboxes were alive; only sessions
    /// still `Ready` are touched. Returns how many were.
    async fn record_heartbeats(&self, session_ids: &[String], at: DateTime<Utc>) -> Result<u64>;
    /// The session's last heartbeat, if any.
    async fn session_heartbeat(&self, session_id: &str) -> Result<Option<DateTime<Utc>>>;
}

/// Agent jobs.
#[async_trait]
pub trait AgentJobStore: Send + Sync {
    // ---- agent_jobs -------------------------------------------------------------------
    /// Inserts a job in `Pending`. `Conflict("job_id")` if taken, `Missing("user")` unless
    /// the user exists.
    async fn insert_agent_job(&self, job: &NewAgentJob) -> Result<AgentJobRecord>;
    /// The job, whoever owns it (ownership is the caller's to check).
    async fn get_agent_job(&self, job_id: &str) -> Result<Option<AgentJobRecord>>;
    /// Up to `limit` of the user's jobs, newest `created_at` first (ties: greater
    /// `job_id`, by bytes, first), starting strictly after `after` in that order.
    async fn list_agent_jobs(
        &self,
        user_id: &str,
        after: Option<&AgentJobCursor>,
        limit: u64,
    ) -> Result<Vec<AgentJobRecord>>;
    /// Applies `update` unless the job is finished or does not exist (then `None`, changing
    /// nothing; of racing updates that finish a job, exactly one applies). `Starting` or
    /// `Running` set `started_at` unless already set; a finished status sets
    /// `completed_at`.
    async fn update_agent_job(
        &self,
        job_id: &str,
        update: &AgentJobUpdate,
    ) -> Result<Option<AgentJobRecord>>;
    /// Records the result archive, whatever the status (the runner may attach it after an
    /// agent reported completion). `false`, changing nothing, if the job already has one
    /// or does not exist.
    async fn set_agent_job_result(&self, job_id: &str, result_path: &str) -> Result<bool>;
    /// Unfinished jobs of every user, oldest `created_at` first (restart recovery).
    async fn list_unfinished_agent_jobs(&self) -> Result<Vec<AgentJobRecord>>;
}

/// The event a state change announces, written by the store in the change's own
/// transaction (the webhook outbox): the change and its event are kept together or lost
/// together. Services implement it (what an event says is theirs); a store method that
/// takes one calls `event` with the record as the change left it, stores one delivery per
/// interested webhook beside the change, and calls `stored` after the commit.
pub trait Announce<R: ?Sized>: Send + Sync {
    /// The event announcing the change (`None`: this one announces nothing).
    fn event(&self, record: &R) -> Option<NewWebhookEvent>;
    /// A new delivery id.
    fn delivery_id(&self) -> String;
    /// The change committed with `deliveries` deliveries (0: no webhook wanted it).
    fn stored(&self, deliveries: usize);
}

/// What a state-changing method announces: nothing, or what [`Announce`] makes.
pub type Announcing<'a, R> = Option<&'a dyn Announce<R>>;

/// Users' webhooks and the outbox of their deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    // ---- webhooks ---------------------------------------------------------------------
    /// Inserts the webhook unless its user already has `max_per_user` (then `None`,
    /// writing nothing; concurrent inserts are counted one after the other).
    /// `Conflict("webhook_id")` if taken, `Missing("user")` for an unknown user.
    async fn insert_webhook(
        &self,
        hook: &WebhookRecord,
        max_per_user: u64,
    ) -> Result<Option<WebhookRecord>>;
    /// The webhook, whoever owns it (ownership is the caller's to check).
    async fn get_webhook(&self, webhook_id: &str) -> Result<Option<WebhookRecord>>;
    /// The user's webhooks, oldest first.
    async fn list_webhooks(&self, user_id: &str) -> Result<Vec<WebhookRecord>>;
    /// Applies `update` and sets `updated_at`; `None` for an unknown webhook.
    async fn update_webhook(
        &self,
        webhook_id: &str,
        update: &WebhookUpdate,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookRecord>>;
    /// Deletes the webhook and its deliveries; `false` if there was none.
    async fn delete_webhook(&self, webhook_id: &str) -> Result<bool>;

    // ---- deliveries (the outbox) ------------------------------------------------------
    /// Stores one `pending` delivery of `event`, due at once, for each of the user's active
    /// webhooks whose events name its type (or `*`), or only for `only_webhook` (active
    /// or not, whatever its events: a test delivery). All or none, in one transaction.
    /// Returns the new deliveries' ids (each from `new_delivery_id`).
    async fn enqueue_webhook_event(
        &self,
        event: &NewWebhookEvent,
        only_webhook: Option<&str>,
        new_delivery_id: &(dyn Fn() -> String + Send + Sync),
    ) -> Result<Vec<String>>;
    /// Claims up to `limit` pending deliveries due at `now` whose lease (if any) has run
    /// out: each gets `lease_until`, `attempts + 1` and `last_attempt_at = now`. Of racing
    /// claimers exactly one gets a given delivery. Earliest due first.
    async fn claim_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DeliveryRecord>>;
    /// Records an attempt's result and releases the lease, only if the delivery is still
    /// `pending` at attempt `result.attempt` (`false`, changing nothing, otherwise: the
    /// lease ran out and someone claimed it again, or it was retried by hand).
    async fn record_webhook_attempt(
        &self,
        delivery_id: &str,
        result: &AttemptResult,
    ) -> Result<bool>;
    /// A page of the webhook's deliveries, newest first, of one status or all.
    async fn list_webhook_deliveries(
        &self,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<DeliveryRecord>>;
    async fn get_webhook_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<Option<DeliveryRecord>>;
    /// Retention: deletes up to `limit` delivered or dead deliveries created before
    /// `before`; how many it deleted (fewer than `limit`: none are left).
    async fn expire_webhook_deliveries(&self, before: DateTime<Utc>, limit: u64) -> Result<u64>;
    /// `Dead → Pending`, due at `now`, with its attempts counted afresh; `None` unless
    /// the delivery exists under this webhook and is dead.
    async fn retry_webhook_delivery(
        &self,
        webhook_id: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<DeliveryRecord>>;
}

/// Port forwards into instances (`/v1/instances/{id}/port-forwards`).
#[async_trait]
pub trait PortForwardStore: Send + Sync {
    /// Inserts an open forward. `Conflict("forward_id")` if taken, `Missing("session or
    /// user")` unless both exist.
    async fn insert_port_forward(&self, forward: &NewPortForward) -> Result<PortForwardRecord>;
    /// The forward, open or closed, whoever owns it (ownership is the caller's to check).
    async fn get_port_forward(&self, forward_id: &str) -> Result<Option<PortForwardRecord>>;
    /// Open forwards of one session (every session's when `None`: restart recovery),
    /// oldest first.
    async fn list_open_port_forwards(
        &self,
        session_id: Option<&str>,
    ) -> Result<Vec<PortForwardRecord>>;
    /// How many forwards the user has open, over all their sessions.
    async fn count_open_port_forwards(&self, user_id: &str) -> Result<u64>;
    /// Closes an open forward with `reason`; `None`, changing nothing, when it is closed
    /// already or does not exist.
    async fn close_port_forward(
        &self,
        forward_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PortForwardRecord>>;
}

/// Snapshots and checkpoints of instances, and which snapshot each instance stands on
/// (`/v1`; implemented in `sql/snapshots.rs`).
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Inserts a snapshot if the user's snapshots (not deleted) stay within `quota` with it
    /// (checked in the same transaction); a snapshot stored deleted is not counted.
    /// `Conflict("name")` if the instance has a snapshot of that name that is not deleted;
    /// `Missing("user, instance or parent snapshot")`. Stores what `announce` makes of the
    /// inserted row with it.
    async fn insert_snapshot(
        &self,
        snapshot: &crate::NewSnapshot,
        quota: crate::SnapshotQuota,
        announce: Announcing<'_, crate::SnapshotRecord>,
    ) -> Result<crate::SnapshotInsert>;
    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Option<crate::SnapshotRecord>>;
    /// The instance's snapshots that are not deleted, newest first (ties: greater id first).
    async fn list_snapshots(&self, instance_id: &str) -> Result<Vec<crate::SnapshotRecord>>;
    /// What the user's snapshots that are not deleted hold.
    async fn snapshot_usage(&self, user_id: &str) -> Result<crate::SnapshotUsage>;
    /// Sets `deleted_at`; `None` if it was deleted already (or does not exist). Stores what
    /// `announce` makes of the changed row with the change.
    async fn mark_snapshot_deleted(
        &self,
        snapshot_id: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, crate::SnapshotRecord>,
    ) -> Result<Option<crate::SnapshotRecord>>;
    /// Records that the instance's sandbox now stands on this snapshot (a fork, a restore),
    /// replacing what it stood on before; `announce` is made of the instance's id.
    async fn set_instance_source(
        &self,
        instance_id: &str,
        snapshot_id: &str,
        at: DateTime<Utc>,
        announce: Announcing<'_, str>,
    ) -> Result<()>;
    /// The snapshot the instance's sandbox stands on, if any.
    async fn instance_source(&self, instance_id: &str) -> Result<Option<String>>;
    /// Deleted snapshots still in the runtime that nothing refers to any more: no live
    /// (`creating`/`ready`) instance stands on them and no snapshot still in the runtime
    /// has them as parent. At most `limit`, oldest first.
    async fn purgeable_snapshots(&self, limit: u64) -> Result<Vec<crate::SnapshotRecord>>;
    /// Those of `runtime_refs` that a snapshot not purged names (deleted ones included:
    /// their copies are the GC's to remove): the runtime's copies the store knows of.
    async fn recorded_snapshot_refs(&self, runtime_refs: &[String]) -> Result<Vec<String>>;
    /// Sets `purged_at` of a deleted snapshot; `false` if it was purged already.
    async fn mark_snapshot_purged(&self, snapshot_id: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Records that a ready session's sandbox was replaced (a restore into the same
    /// instance): `sandbox_id` becomes `new_sandbox` if it was `old_sandbox` and the session
    /// is still `Ready`; `None` otherwise (ended meanwhile, or replaced by someone else).
    async fn replace_session_sandbox(
        &self,
        session_id: &str,
        old_sandbox: &str,
        new_sandbox: &str,
    ) -> Result<Option<SessionRecord>>;
}

/// Commands run through the instance API (`/v1/instances/{id}/exec`), table `instance_execs`.
#[async_trait]
pub trait ExecStore: Send + Sync {
    /// Stores a `running` exec. `Missing` for an unknown session or user.
    async fn insert_instance_exec(
        &self,
        exec: &crate::NewInstanceExec,
    ) -> Result<crate::InstanceExecRecord>;
    /// Ends a running exec; `None` if it is not running (already finished, or unknown).
    async fn finish_instance_exec(
        &self,
        exec_id: &str,
        finish: &crate::ExecFinish,
    ) -> Result<Option<crate::InstanceExecRecord>>;
    async fn get_instance_exec(
        &self,
        session_id: &str,
        exec_id: &str,
    ) -> Result<Option<crate::InstanceExecRecord>>;
    /// An instance's execs, newest first (`created_at`, then `exec_id`), after `after`.
    async fn list_instance_execs(
        &self,
        session_id: &str,
        after: Option<&crate::ExecCursor>,
        limit: u64,
    ) -> Result<Vec<crate::InstanceExecRecord>>;
    /// Start-up: the execs still `running` that the restart cut off fail with `error`:
    /// with `node`, those of sessions no longer live and of live sessions of that node
    /// (and of live sessions stored without a node, when `unowned_too`): another live
    /// node's execs run on. Without `node`, every running exec. Returns how many.
    async fn fail_running_instance_execs(
        &self,
        error: &str,
        at: DateTime<Utc>,
        node: Option<&str>,
        unowned_too: bool,
    ) -> Result<u64>;
}

/// Base images: numbered versions of families and which is current (`/v1/base-images`;
/// implemented in `sql/base_images.rs`).
#[async_trait]
pub trait BaseImageStore: Send + Sync {
    /// Records a version in `preparing`, numbered one more than the last its family gave
    /// (numbers are never reused), unless a limit is reached. `Missing("user")`.
    async fn insert_base_image(
        &self,
        image: &crate::NewBaseImage,
        limits: crate::BaseImageLimits,
    ) -> Result<crate::BaseImageInsert>;
    async fn get_base_image(&self, image_id: &str) -> Result<Option<crate::BaseImageRecord>>;
    /// Every version (of one family when given), by family, newest version first.
    async fn list_base_images(&self, family: Option<&str>) -> Result<Vec<crate::BaseImageRecord>>;
    /// A page of every version in [`Self::list_base_images`]'s order, strictly after the
    /// version `after` names (`(family, version)`, the previous page's last); at most `limit`.
    async fn page_base_images(
        &self,
        after: Option<(&str, u64)>,
        limit: u64,
    ) -> Result<Vec<crate::BaseImageRecord>>;
    /// The family's current version, if it has one.
    async fn current_base_image(&self, family: &str) -> Result<Option<crate::BaseImageRecord>>;
    /// Records progress of a version still `preparing` (otherwise changes nothing).
    async fn set_base_image_progress(
        &self,
        image_id: &str,
        progress: crate::BaseImageProgress,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// `preparing → prepared | failed`; `None`, changing nothing, if it is not preparing
    /// (aborted meanwhile) or does not exist.
    async fn finish_base_image(
        &self,
        image_id: &str,
        outcome: &crate::BaseImageOutcome,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::BaseImageRecord>>;
    /// `preparing | prepared → aborted`; `None` otherwise.
    async fn abort_base_image(
        &self,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::BaseImageRecord>>;
    /// `prepared → promoted`, and the family's current version; `None` unless prepared.
    async fn promote_base_image(
        &self,
        image_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<crate::BaseImageRecord>>;
    /// Makes the highest promoted version below the current one current; `None`, changing
    /// nothing, when the family has no current version or none before it.
    async fn rollback_base_image_family(
        &self,
        family: &str,
    ) -> Result<Option<crate::BaseImageRecord>>;
    /// Deletes a version that is neither current nor preparing; whether it did.
    async fn delete_base_image(&self, image_id: &str) -> Result<bool>;
}

/// Which node runs each session (`sessions.node_id`; implemented in `sql/nodes.rs`). A
/// node is one process with its own runtime root on a data directory (ARCHITECTURE.md,
/// "Nodes on one data directory"); NULL is the data directory's own node before 0015.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// `SessionStore::insert_session`, recording `node_id` as the node that runs it.
    async fn insert_session_on(
        &self,
        session: &NewSession,
        node_id: &str,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<SessionRecord>;
    /// `(session_id, node_id)` of every `creating` or `ready` session.
    async fn live_session_nodes(&self) -> Result<Vec<(String, Option<String>)>>;
}

/// The node registry (`nodes`, migration 0017; implemented in `sql/node_registry.rs`):
/// the servers sharing this database, their capacity and their last heartbeat.
#[async_trait]
pub trait NodeRegistryStore: Send + Sync {
    /// Inserts or refreshes the node's row; it becomes `active` unless it was `draining`.
    /// Every instant of the registry is the database's clock (`database_now`), so nodes'
    /// clocks may differ.
    async fn register_node(&self, node: &crate::NodeRegistration) -> Result<crate::NodeRecord>;
    /// Records a heartbeat unless the node is `down` (or unknown): `None` then, and the
    /// node must reconcile before registering again.
    /// The beat's image references (newest first: the first [`crate::MAX_NODE_IMAGES`]
    /// are kept) and figures replace the last ones.
    async fn heartbeat_node(
        &self,
        node_id: &str,
        beat: &crate::NodeBeat,
    ) -> Result<Option<crate::NodeStatus>>;
    /// Sets `down` every node not down whose last heartbeat is more than `silent_for_ms`
    /// old, and returns them: each to exactly one caller.
    async fn mark_stale_nodes_down(&self, silent_for_ms: u64) -> Result<Vec<crate::NodeRecord>>;
    /// Sets a node's status; `(changed, node)`, `changed` true for exactly one caller of
    /// racing equal changes; `None` for an unknown node.
    async fn set_node_status(
        &self,
        node_id: &str,
        status: crate::NodeStatus,
    ) -> Result<Option<(bool, crate::NodeRecord)>>;
    async fn get_node(&self, node_id: &str) -> Result<Option<crate::NodeRecord>>;
    /// Every node, by id.
    async fn list_nodes(&self) -> Result<Vec<crate::NodeRecord>>;
    /// The database's clock: what heartbeats are compared against.
    async fn database_now(&self) -> Result<DateTime<Utc>>;
    /// The registered node a session was placed on, in one read (`None`: no such
    /// session, one stored without a node, or a node not in the registry).
    async fn session_owner(&self, session_id: &str) -> Result<Option<crate::NodeRecord>>;
    /// The registered node that runs (or ran) an agent job, which keeps its files.
    async fn agent_job_owner(&self, job_id: &str) -> Result<Option<crate::NodeRecord>>;
}

/// Password accounts (`/v1/auth`): credentials, device sessions, emailed single-use tokens
/// and the mail outbox. A token and the mail that carries it are always written in one
/// transaction, so a crash never leaves a token nobody was told about, nor a mail whose
/// token does not exist.
#[async_trait]
pub trait PasswordAccountStore: Send + Sync {
    /// Creates the user row and its credential, and (when given) the e-mail verification
    /// token and its mail, in one transaction. `Conflict("email_lower")` when a live
    /// account already signs in with this address.
    async fn create_account(
        &self,
        account: &crate::NewAccount,
        verification: Option<(&crate::AccountToken, &crate::OutboxMail)>,
    ) -> Result<User>;
    /// The live account signing in with this (lower-cased) address, and its user.
    async fn find_account_by_email(
        &self,
        email_lower: &str,
    ) -> Result<Option<(crate::AccountCredential, User)>>;
    /// The live credential of a user (none for API-key-only and GitHub users).
    async fn get_account(&self, user_id: &str) -> Result<Option<crate::AccountCredential>>;
    async fn set_account_name(&self, user_id: &str, name: &str) -> Result<()>;
    /// Replaces the password hash; with `revoke_sessions`, every device session of the user
    /// is revoked except `keep` (in the same transaction). Returns how many were revoked.
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> Result<u64>;
    /// Stores a token and the mail carrying it, atomically.
    async fn insert_token_with_mail(
        &self,
        token: &crate::AccountToken,
        mail: &crate::OutboxMail,
    ) -> Result<()>;
    /// Spends a token: only one caller ever gets it, and only before `expires_at`.
    async fn consume_account_token(
        &self,
        token_hash: &str,
        purpose: crate::AccountTokenPurpose,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::AccountToken>>;
    /// A token as stored (spent, expired or not): for checks before spending it.
    async fn get_account_token(
        &self,
        token_hash: &str,
        purpose: crate::AccountTokenPurpose,
    ) -> Result<Option<crate::AccountToken>>;
    /// Spends every unspent token of `purpose` of the user (they stop working): how many.
    async fn void_account_tokens(
        &self,
        user_id: &str,
        purpose: crate::AccountTokenPurpose,
        at: DateTime<Utc>,
    ) -> Result<u64>;
    /// Marks the address verified if it is still the account's address.
    async fn mark_email_verified(
        &self,
        user_id: &str,
        email: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Moves the account to `email` (verified by the link that got here) and revokes every
    /// device session. `Conflict("email_lower")` if another live account took it meanwhile.
    async fn change_account_email(
        &self,
        user_id: &str,
        email: &str,
        at: DateTime<Utc>,
    ) -> Result<u64>;
    /// Soft delete: the credential is marked deleted (its address freed), the user
    /// deactivated, every API key, device session and refresh token revoked; one
    /// transaction.
    async fn soft_delete_account(
        &self,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<crate::AccountDeletion>;

    // ---- device sessions -------------------------------------------------------------
    async fn insert_device_session(&self, session: &crate::DeviceSession) -> Result<()>;
    async fn get_device_session(&self, session_id: &str) -> Result<Option<crate::DeviceSession>>;
    /// The user's live sessions, newest first, at most `limit`.
    async fn list_device_sessions(
        &self,
        user_id: &str,
        limit: u64,
    ) -> Result<Vec<crate::DeviceSession>>;
    /// Records a use (`last_seen_at`), only if the recorded one is older than `unless_after`.
    async fn touch_device_session(
        &self,
        session_id: &str,
        at: DateTime<Utc>,
        unless_after: DateTime<Utc>,
    ) -> Result<()>;
    /// Revokes one live session of the user; `false` if none (unknown, another user's,
    /// already revoked).
    async fn revoke_device_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<bool>;
    /// Revokes every live session of the user but `keep`; returns how many.
    async fn revoke_device_sessions(
        &self,
        user_id: &str,
        keep: Option<&str>,
        at: DateTime<Utc>,
        reason: &str,
    ) -> Result<u64>;

    // ---- mail outbox -------------------------------------------------------------------
    /// Claims due pending mails with a lease until `lease_until`, counting the attempt.
    async fn claim_mail(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<crate::OutboxMail>>;
    /// Records an attempt's outcome, only if `attempt` is still the mail's latest attempt.
    /// `Sent` clears the body (the link in it is a secret that has done its job); `Logged`
    /// keeps the link for an admin; `Pending` schedules the next attempt at `next_at`.
    async fn record_mail_attempt(
        &self,
        mail_id: &str,
        attempt: u32,
        status: crate::MailStatus,
        next_at: DateTime<Utc>,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Mails not sent over SMTP (logged, pending or dead) that carry a link, newest first.
    async fn list_unsent_mail(&self, limit: u64) -> Result<Vec<crate::OutboxMail>>;
    /// Mails to a user, newest first (for the data export).
    async fn list_user_mail(&self, user_id: &str, limit: u64) -> Result<Vec<crate::OutboxMail>>;
}

/// Second factors of password accounts: TOTP factors, backup codes, and sign-in challenges.
#[async_trait]
pub trait MfaStore: Send + Sync {
    /// Stores an unconfirmed factor, dropping the user's earlier unconfirmed ones.
    async fn insert_mfa_factor(&self, factor: &crate::MfaFactor) -> Result<()>;
    async fn get_mfa_factor(&self, factor_id: &str) -> Result<Option<crate::MfaFactor>>;
    /// The user's confirmed factors, oldest first.
    async fn list_mfa_factors(&self, user_id: &str) -> Result<Vec<crate::MfaFactor>>;
    /// Confirms an unconfirmed factor of the user at `step`; with `backup_codes`, they
    /// replace the user's codes (one transaction). `false` if there was nothing to confirm.
    async fn confirm_mfa_factor(
        &self,
        user_id: &str,
        factor_id: &str,
        step: i64,
        backup_codes: &[String],
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Accepts `step` for a confirmed factor only if it is later than the last accepted one.
    async fn use_totp_step(&self, factor_id: &str, step: i64, at: DateTime<Utc>) -> Result<bool>;
    /// Removes a factor of the user (and the backup codes with the last one).
    async fn delete_mfa_factor(&self, user_id: &str, factor_id: &str) -> Result<bool>;
    /// Replaces every backup code of the user.
    async fn replace_backup_codes(
        &self,
        user_id: &str,
        code_hashes: &[String],
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Spends an unused backup code.
    async fn use_backup_code(
        &self,
        user_id: &str,
        code_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    async fn count_backup_codes(&self, user_id: &str) -> Result<u64>;
    async fn insert_mfa_challenge(&self, challenge: &crate::MfaChallenge) -> Result<()>;
    /// A live challenge: unused, unexpired, under `max_failures`.
    async fn get_mfa_challenge(
        &self,
        challenge_hash: &str,
        now: DateTime<Utc>,
        max_failures: u32,
    ) -> Result<Option<crate::MfaChallenge>>;
    async fn fail_mfa_challenge(&self, challenge_hash: &str) -> Result<()>;
    /// Spends a live challenge (once).
    async fn consume_mfa_challenge(
        &self,
        challenge_hash: &str,
        now: DateTime<Utc>,
        max_failures: u32,
    ) -> Result<bool>;
}

/// Organizations (`/v1/orgs`, migration 0016): memberships and roles, invitations, the keys
/// that carry an org, and the append-only audit log. Role rules that need a consistent view
/// (the last owner stays) are checked inside the writing transaction.
#[async_trait]
pub trait OrgStore: Send + Sync {
    /// Creates the organization (and, for a team org, its account user) with `owner_id` as
    /// its owner. `Conflict("slug")` if taken.
    async fn create_org(&self, org: &crate::Organization, owner_id: &str) -> Result<()>;
    /// The user's personal organization (`org_p_<user_id>`), created if missing, and made
    /// their default if they have none; idempotent.
    async fn ensure_personal_org(&self, user_id: &str, name: &str, at: DateTime<Utc>)
        -> Result<()>;
    /// An organization by id or slug.
    async fn find_org(&self, id_or_slug: &str) -> Result<Option<crate::Organization>>;
    /// The team organization whose account user this is (see `Organization::account_user_id`).
    async fn org_of_account(&self, user_id: &str) -> Result<Option<crate::Organization>>;
    /// Every organization the user belongs to, oldest membership first.
    async fn list_memberships(&self, user_id: &str) -> Result<Vec<crate::OrgMembership>>;
    async fn get_membership(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<Option<crate::OrgMembership>>;
    async fn list_org_members(&self, org_id: &str) -> Result<Vec<crate::OrgMember>>;
    /// Changes a member's role; refused (`LastOwner`) when it would leave no owner.
    async fn set_member_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: crate::OrgRole,
    ) -> Result<crate::MemberChange>;
    /// Removes a member and revokes the org keys they created; refused (`LastOwner`) for
    /// the last owner.
    async fn remove_member(
        &self,
        org_id: &str,
        user_id: &str,
        at: DateTime<Utc>,
    ) -> Result<crate::MemberChange>;
    /// Stores an invitation and the mail that carries its token, atomically.
    async fn insert_invitation(
        &self,
        invitation: &crate::OrgInvitation,
        mail: &crate::OutboxMail,
    ) -> Result<()>;
    /// The org's invitations neither accepted nor revoked, newest first.
    async fn list_pending_invitations(&self, org_id: &str) -> Result<Vec<crate::OrgInvitation>>;
    /// Live invitations (unspent, unrevoked, unexpired) to this lower-cased address.
    async fn list_invitations_to(
        &self,
        email_lower: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::OrgInvitation>>;
    async fn get_invitation_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<crate::OrgInvitation>>;
    async fn revoke_invitation(
        &self,
        org_id: &str,
        invitation_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Spends a live invitation for `user_id` and adds the membership (unless they already
    /// are a member), in one transaction. `None` if the invitation is not live.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::OrgInvitation>>;
    /// Inserts an API key that carries `org_id`, atomically with its org.
    async fn insert_org_api_key(
        &self,
        key: &crate::NewApiKey,
        org_id: &str,
    ) -> Result<crate::ApiKeyRecord>;
    async fn list_org_api_keys(&self, org_id: &str) -> Result<Vec<crate::ApiKeyRecord>>;
    async fn revoke_org_api_key(
        &self,
        org_id: &str,
        key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Appends an audit record (the table refuses updates and deletes).
    async fn insert_audit(&self, event: &crate::AuditEvent) -> Result<()>;
    /// The org's audit records, newest first, at most `limit`, after the cursor.
    async fn list_audit(
        &self,
        org_id: &str,
        filter: &crate::AuditFilter,
        limit: u64,
    ) -> Result<Vec<crate::AuditEvent>>;
}

/// Org security (migration 0018; implemented in `sql/org_security.rs`): sudo grants, org IP
/// allowlists, the default org.
#[async_trait]
pub trait OrgSecurityStore: Send + Sync {
    /// Sets (or clears) the sudo grant of a live session or key of `user_id`; false when
    /// there is none.
    async fn set_sudo(
        &self,
        holder: &crate::SudoHolder,
        user_id: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<bool>;
    /// Until when the holder (live, not revoked) may call destructive routes.
    async fn get_sudo(&self, holder: &crate::SudoHolder) -> Result<Option<DateTime<Utc>>>;
    async fn list_ip_allowlist(&self, org_id: &str) -> Result<Vec<crate::IpAllowEntry>>;
    /// Replaces the whole list in one transaction.
    async fn replace_ip_allowlist(
        &self,
        org_id: &str,
        entries: &[crate::IpAllowEntry],
    ) -> Result<()>;
    /// Adds one entry unless the org already has `max_entries` (false then);
    /// `Conflict` when the network is listed.
    async fn add_ip_allow_entry(
        &self,
        entry: &crate::IpAllowEntry,
        max_entries: u32,
    ) -> Result<bool>;
    async fn delete_ip_allow_entry(&self, org_id: &str, entry_id: &str) -> Result<bool>;
    /// The org of an org API key and its allowlist (`None`: not an org key).
    async fn key_allowlist(&self, key_id: &str) -> Result<Option<crate::KeyAllowlist>>;
    /// Makes the membership the user's default; false when they are no member.
    async fn set_default_org(&self, user_id: &str, org_id: &str) -> Result<bool>;
}
