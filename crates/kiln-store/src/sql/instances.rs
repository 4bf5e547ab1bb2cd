//! Sessions as instances (`/v1/instances`): made from a sample or an image, with a name,
//! labels and limits; listed with filters; changed after creation.
use sqlx::QueryBuilder;

use super::dialect::{BuilderExt, Dialect, QueryExt};
use super::{as_i64, outbox, rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::search_pattern::contains_pattern;
use crate::timestamp::Stamp;
use crate::{
    Announcing, NewSession, Result, SessionChange, SessionFilter, SessionRecord, SessionSource,
};

pub(super) async fn insert<D: Dialect>(
    store: &SqlStore<D>,
    session: &NewSession,
    node_id: Option<&str>,
    announce: Announcing<'_, SessionRecord>,
) -> Result<SessionRecord> {
    let sql = format!(
        "INSERT INTO sessions (session_id, user_id, dataset, sample_id, sample_version, image, \
             name, labels, limit_cpu_millicores, limit_memory_bytes, limit_disk_bytes, status, \
             requested_at, expires_at, node_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'creating', $12, $13, $14) \
         RETURNING {}",
        columns::plain(columns::SESSION)
    );
    let (dataset, sample_id, version, image) = match &session.source {
        SessionSource::Sample {
            dataset,
            sample_id,
            version,
        } => (
            Some(dataset.as_str()),
            Some(sample_id.as_str()),
            Some(*version),
            None,
        ),
        SessionSource::Image { reference } => (None, None, None, Some(reference.as_str())),
    };
    let labels = crate::json_column::encode(&session.labels)?;
    let limit = |n: Option<u64>| n.map(as_i64);
    let mut tx = D::begin_write(store.pool()).await?;
    let row = sqlx::query(&sql)
        .arg(session.session_id.as_str())
        .arg(session.user_id.as_str())
        .arg(dataset)
        .arg(sample_id)
        .arg(version)
        .arg(image)
        .arg(session.name.as_deref())
        .arg(labels)
        .arg(limit(session.limits.cpu_millicores))
        .arg(limit(session.limits.memory_bytes))
        .arg(limit(session.limits.disk_bytes))
        .arg(Stamp(session.requested_at))
        .arg(Stamp(session.expires_at))
        .arg(node_id)
        .fetch_one(D::exec(&mut tx))
        .await
        .map_err(|e| insert_error(e, "session_id", "user or sample version"))?;
    let record = rows::session::<D>(&row)?;
    let deliveries = outbox::stage::<D, _>(&mut tx, announce, &record).await?;
    tx.commit().await?;
    outbox::stored(announce, deliveries);
    Ok(record)
}

/// `WHERE user_id = … AND …` for `filter`.
fn push_filter<'a, D: Dialect>(
    query: &mut QueryBuilder<'a, D>,
    user_id: &'a str,
    filter: &'a SessionFilter,
) {
    query.push_sql(" WHERE user_id = ").push_arg(user_id);
    if filter.samples_only {
        query.push_sql(" AND image IS NULL");
    }
    if !filter.statuses.is_empty() {
        query
            .push_sql(" AND status IN (")
            .push_args(filter.statuses.iter().map(|s| s.as_str()))
            .push_sql(")");
    }
    // Labels are a JSON object in TEXT on both backends; each wanted pair must be in it.
    let pairs = match D::BACKEND {
        "postgres" => "json_each_text(sessions.labels::json)",
        _ => "json_each(sessions.labels)",
    };
    for (key, value) in &filter.labels {
        query
            .push_sql(" AND EXISTS (SELECT 1 FROM ")
            .push_sql(pairs)
            .push_sql(" AS l WHERE l.key = ")
            .push_arg(key.as_str())
            .push_sql(" AND l.value = ")
            .push_arg(value.as_str())
            .push_sql(")");
    }
    if let Some(search) = filter.search.as_deref().filter(|s| !s.is_empty()) {
        push_search(query, pairs, search);
    }
}

/// ` AND (…)`: `search` in any of the columns people name a session by, or in a label's
/// value. No index serves a substring; the user's own rows (`sessions_by_user`) bound it.
fn push_search<D: Dialect>(query: &mut QueryBuilder<'_, D>, pairs: &str, search: &str) {
    let like = format!(" {} ", D::LIKE_IGNORING_CASE);
    let pattern = contains_pattern(search);
    query.push_sql(" AND (");
    for (i, column) in ["session_id", "name", "dataset", "sample_id", "image"]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            query.push_sql(" OR ");
        }
        query
            .push_sql(column)
            .push_sql(&like)
            .push_arg(pattern.clone())
            .push_sql(" ESCAPE '\\'");
    }
    query
        .push_sql(" OR EXISTS (SELECT 1 FROM ")
        .push_sql(pairs)
        .push_sql(" AS l WHERE l.value")
        .push_sql(&like)
        .push_arg(pattern)
        .push_sql(" ESCAPE '\\'))");
}

pub(super) async fn list<D: Dialect>(
    store: &SqlStore<D>,
    user_id: &str,
    filter: &SessionFilter,
    limit: u64,
    offset: u64,
) -> Result<(Vec<SessionRecord>, u64)> {
    // The total and the page come from the same snapshot.
    let mut tx = D::begin_snapshot(store.pool()).await?;
    let mut count = QueryBuilder::<D>::new("SELECT COUNT(*) AS n FROM sessions");
    push_filter(&mut count, user_id, filter);
    let row = D::build(&mut count).fetch_one(D::exec(&mut tx)).await?;
    let total: i64 = D::get(&row, "n")?;
    let mut select = QueryBuilder::<D>::new(format!(
        "SELECT {} FROM sessions",
        columns::plain(columns::SESSION)
    ));
    push_filter(&mut select, user_id, filter);
    if let Some(after) = &filter.after {
        select
            .push_sql(" AND (requested_at < ")
            .push_arg(Stamp(after.requested_at))
            .push_sql(" OR (requested_at = ")
            .push_arg(Stamp(after.requested_at))
            .push_sql(" AND session_id < ")
            .push_arg(after.session_id.as_str())
            .push_sql("))");
    }
    select
        .push_sql(" ORDER BY requested_at DESC, session_id DESC LIMIT ")
        .push_arg(as_i64(limit))
        .push_sql(" OFFSET ")
        .push_arg(as_i64(offset));
    let found = D::build(&mut select).fetch_all(D::exec(&mut tx)).await?;
    tx.commit().await?;
    let sessions = found
        .iter()
        .map(rows::session::<D>)
        .collect::<Result<_>>()?;
    Ok((sessions, total.unsigned_abs()))
}

pub(super) async fn change<D: Dialect>(
    store: &SqlStore<D>,
    session_id: &str,
    change: &SessionChange,
) -> Result<Option<SessionRecord>> {
    let labels = change
        .labels
        .as_ref()
        .map(crate::json_column::encode)
        .transpose()?;
    // `session_id = session_id` keeps the SET list non-empty for an empty change.
    let mut update = QueryBuilder::<D>::new("UPDATE sessions SET session_id = session_id");
    if let Some(name) = &change.name {
        update.push_sql(", name = ").push_arg(name.as_deref());
    }
    if let Some(labels) = labels {
        update.push_sql(", labels = ").push_arg(labels);
    }
    if let Some(at) = change.expires_at {
        update.push_sql(", expires_at = ").push_arg(Stamp(at));
    }
    update.push_sql(" WHERE session_id = ").push_arg(session_id);
    if change.expires_at.is_some() {
        update.push_sql(" AND status IN ('creating', 'ready')");
    }
    update
        .push_sql(" RETURNING ")
        .push_sql(&columns::plain(columns::SESSION));
    let mut conn = store.conn().await?;
    let row = D::build(&mut update)
        .fetch_optional(D::exec(&mut conn))
        .await?;
    row.as_ref().map(rows::session::<D>).transpose()
}
