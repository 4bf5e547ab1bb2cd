//! GitHub identities on PostgreSQL: profile updates of returning users and their sealed tokens.
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use super::rows;
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::to_micros;
use crate::{Result, User};

pub(super) async fn update_github_profile(
    pool: &PgPool,
    user_id: &str,
    github_login: &str,
    name: &str,
) -> Result<Option<User>> {
    let sql = format!(
        "UPDATE users SET github_login = $1, name = $2 WHERE user_id = $3 RETURNING {}",
        columns::plain(columns::USER)
    );
    let row = sqlx::query(&sql)
        .bind(github_login)
        .bind(name)
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| rows::user(&r, "")).transpose()
}

pub(super) async fn put_github_token(
    pool: &PgPool,
    user_id: &str,
    sealed_token: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO github_tokens (user_id, sealed_token, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET sealed_token = excluded.sealed_token, \
         updated_at = excluded.updated_at",
    )
    .bind(user_id)
    .bind(sealed_token)
    .bind(to_micros(at))
    .execute(pool)
    .await
    .map_err(|e| insert_error(e, "user_id", "user"))?;
    Ok(())
}

pub(super) async fn get_github_token(pool: &PgPool, user_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT sealed_token FROM github_tokens WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?,
    )
}
