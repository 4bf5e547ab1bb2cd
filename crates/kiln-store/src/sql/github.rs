//! GitHub identities: profile updates of returning users and their sealed tokens.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::dialect::{Dialect, QueryExt};
use super::{rows, SqlStore};
use crate::columns;
use crate::missing_reference::insert_error;
use crate::timestamp::Stamp;
use crate::{GithubStore, Result, User};

#[async_trait]
impl<D: Dialect> GithubStore for SqlStore<D> {
    async fn update_github_profile(
        &self,
        user_id: &str,
        github_login: &str,
        name: &str,
    ) -> Result<Option<User>> {
        let sql = format!(
            "UPDATE users SET github_login = $1, name = $2 WHERE user_id = $3 RETURNING {}",
            columns::plain(columns::USER)
        );
        let mut conn = self.conn().await?;
        let row = sqlx::query(&sql)
            .arg(github_login)
            .arg(name)
            .arg(user_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| rows::user::<D>(&r, "")).transpose()
    }

    async fn put_github_token(
        &self,
        user_id: &str,
        sealed_token: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        sqlx::query(
            "INSERT INTO github_tokens (user_id, sealed_token, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET sealed_token = excluded.sealed_token, \
             updated_at = excluded.updated_at",
        )
        .arg(user_id)
        .arg(sealed_token)
        .arg(Stamp(at))
        .execute(D::exec(&mut conn))
        .await
        .map_err(|e| insert_error(e, "user_id", "user"))?;
        Ok(())
    }

    async fn get_github_token(&self, user_id: &str) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        let row = sqlx::query("SELECT sealed_token FROM github_tokens WHERE user_id = $1")
            .arg(user_id)
            .fetch_optional(D::exec(&mut conn))
            .await?;
        row.map(|r| D::get(&r, "sealed_token")).transpose()
    }
}
