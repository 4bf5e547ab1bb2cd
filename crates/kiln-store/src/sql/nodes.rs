//! Which node runs each session (`sessions.node_id`, migration 0015): what start-up
//! recovery and reclaiming a dead node select on.
use async_trait::async_trait;

use super::dialect::Dialect;
use super::{instances, SqlStore};
use crate::{Announcing, NewSession, NodeStore, Result, SessionRecord};

#[async_trait]
impl<D: Dialect> NodeStore for SqlStore<D> {
    async fn insert_session_on(
        &self,
        session: &NewSession,
        node_id: &str,
        announce: Announcing<'_, SessionRecord>,
    ) -> Result<SessionRecord> {
        instances::insert(self, session, Some(node_id), announce).await
    }

    async fn live_session_nodes(&self) -> Result<Vec<(String, Option<String>)>> {
        let mut conn = self.conn().await?;
        let rows = sqlx::query(
            "SELECT session_id, node_id FROM sessions \
             WHERE status IN ('creating', 'ready') ORDER BY session_id",
        )
        .fetch_all(D::exec(&mut conn))
        .await?;
        rows.iter()
            .map(|row| Ok((D::get(row, "session_id")?, D::get(row, "node_id")?)))
            .collect()
    }
}
