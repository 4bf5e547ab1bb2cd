//! Events written with the change they announce ([`crate::Announce`]): in the change's own
//! transaction, so a crash keeps both or neither ("nothing lost on a crash" begins here).
use super::dialect::Dialect;
use super::webhooks::insert_deliveries;
use crate::{Announcing, Result};

/// Writes the deliveries of the event `announce` makes of `record` in the transaction
/// `conn` is in; how many.
pub(super) async fn stage<D: Dialect, R: ?Sized + Sync>(
    conn: &mut D::Connection,
    announce: Announcing<'_, R>,
    record: &R,
) -> Result<usize> {
    let Some(announce) = announce else {
        return Ok(0);
    };
    let Some(event) = announce.event(record) else {
        return Ok(0);
    };
    let ids = insert_deliveries::<D>(conn, &event, None, &|| announce.delivery_id()).await?;
    Ok(ids.len())
}

/// After the commit: tells `announce` what was stored.
pub(super) fn stored<R: ?Sized>(announce: Announcing<'_, R>, deliveries: usize) {
    if let Some(announce) = announce {
        announce.stored(deliveries);
    }
}
