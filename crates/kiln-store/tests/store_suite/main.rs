//! The storage suite: every scenario is written once, against `Arc<dyn Store>`, and run on
//! SQLite (a temporary file) and on PostgreSQL (a fresh database per test, dropped after).
//!
//! PostgreSQL comes from `KILN_TEST_POSTGRES_URL`, an admin URL such as the one
//! `scripts/start-postgres.sh` prints. Without it the PostgreSQL runs are skipped with a note,
//! except when `CI` is set, where they fail.
// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used)]

mod accounts;
mod accounts_v1;
mod agent_jobs;
mod base_images;
mod billing;
mod concurrency;
mod github;
mod harness;
mod instance_execs;
mod instances;
mod interactions;
mod migration_0008;
mod migration_0016;
mod migration_0019;
mod node_registry;
mod nodes;
mod opening;
mod org_security;
mod outbox;
mod output_retention;
mod persistence;
mod ports;
mod samples;
mod session_races;
mod sessions;
mod snapshots;
mod upgrade;
mod verification_jobs;
mod webhooks;

/// Declares each scenario as two tests, `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($module:ident :: $scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::harness::run_sqlite(crate::$module::$scenario).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    crate::harness::run_postgres(crate::$module::$scenario).await;
                }
            )*
        }
    };
}

on_both_backends!(
    org_security::sudo_grants_are_per_live_credential,
    org_security::ip_allowlists_and_default_orgs,
    accounts_v1::mailed_tokens_are_spent_once,
    accounts_v1::mail_outbox_leases_and_outcomes,
    accounts_v1::soft_delete_revokes_everything,
    accounts_v1::second_factors_are_accepted_once,
    accounts::backend_answers_ping,
    accounts::users_round_trip,
    accounts::timestamps_keep_microseconds_in_utc,
    accounts::api_keys_lifecycle,
    accounts::expired_and_revoked_keys_are_not_found,
    accounts::refresh_token_outcomes,
    samples::import_creates_dataset_and_versions,
    samples::import_with_duplicate_sample_id_writes_nothing,
    samples::empty_import_creates_the_dataset,
    samples::datasets_listed_by_name_with_latest_counts,
    samples::search_matches_literally_and_ignores_case,
    samples::pagination_reports_total_of_all_matches,
    samples::private_datasets_are_listed_to_their_owner_only,
    persistence::data_survives_reopen,
    persistence::sessions_survive_reopen,
    concurrency::refresh_token_consumed_exactly_once_under_concurrency,
    concurrency::concurrent_imports_of_one_dataset_are_serialized,
    sessions::session_lifecycle_creating_ready_closed,
    sessions::session_creation_can_fail_or_be_terminated,
    sessions::end_session_accepts_only_closed_or_terminated,
    sessions::unknown_session_ids_give_none,
    sessions::session_insert_checks_ids_and_references,
    sessions::sessions_listed_newest_first_with_total,
    sessions::live_sessions_counted_and_listed_by_status,
    sessions::session_usage_samples_are_kept_with_the_session,
    instances::image_instances_keep_name_labels_and_limits,
    instances::instances_listed_by_status_and_labels,
    instances::instance_changes_apply_and_expiry_only_while_live,
    instances::instances_found_by_search,
    interactions::interactions_are_numbered_and_completed_once,
    interactions::interactions_belong_to_their_session,
    interactions::failed_interaction_inserts_use_no_number,
    output_retention::old_output_is_expired_once_oldest_first,
    verification_jobs::job_runs_to_completion,
    verification_jobs::jobs_fail_cancel_and_skip_states,
    verification_jobs::job_ids_and_references_are_checked,
    verification_jobs::a_sessions_jobs_are_listed_newest_first,
    session_races::racing_ends_of_a_session_have_one_winner,
    session_races::creation_failure_racing_a_close_has_one_winner,
    session_races::concurrent_interactions_get_consecutive_seqs,
    session_races::racing_outcomes_of_an_interaction_have_one_winner,
    session_races::racing_job_finishes_have_one_winner,
    billing::charges_with_a_reference_apply_once,
    billing::a_session_is_billed_once_for_its_ready_time,
    billing::racing_close_and_expiry_charge_once,
    billing::heartbeats_touch_ready_sessions_and_bound_the_bill,
    billing::the_end_reason_is_set_by_the_call_that_ends,
    billing::stripe_credits_apply_once_per_event_and_checkout,
    billing::usage_is_filtered_paged_and_summed,
    billing::transactions_are_found_by_kind_and_reference,
    agent_jobs::agent_job_runs_to_completion,
    agent_jobs::agent_job_errors_keep_their_message_and_ids_are_checked,
    agent_jobs::agent_jobs_paginate_newest_first_by_cursor,
    agent_jobs::racing_agent_job_finishes_have_one_winner,
    instance_execs::instance_execs_finish_once_and_list_newest_first,
    instance_execs::a_restart_fails_its_own_nodes_execs_only,
    github::github_profile_updates_touch_only_login_and_name,
    github::github_tokens_are_kept_per_user_and_replaced,
    webhooks::webhooks_fan_out_and_are_limited,
    webhooks::deliveries_are_leased_retried_and_dead_lettered,
    outbox::events_are_stored_with_their_change,
    ports::port_forwards_are_listed_counted_and_closed_once,
    ports::port_forward_ids_and_references_are_checked,
    snapshots::snapshot_quota_names_and_deletes,
    snapshots::racing_snapshot_inserts_keep_the_quota,
    snapshots::only_snapshots_nothing_stands_on_are_purgeable,
    snapshots::a_sandbox_swap_needs_the_old_sandbox_and_a_ready_session,
    snapshots::recorded_runtime_refs_are_those_not_purged,
    base_images::base_image_versions_move_through_their_statuses_once,
    base_images::racing_base_image_inserts_get_distinct_numbers,
    nodes::live_sessions_name_their_node,
    node_registry::nodes_heartbeat_and_go_down_once,
);
