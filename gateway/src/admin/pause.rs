//! `PAUSE [db]` and `RESUME [db]`: let running transactions finish and hold
//! new ones (every pool when no database is named), then let them go.

use super::Console;
use crate::error::ClientError;
use crate::pool::DbPool;
use std::sync::Arc;

/// The pools a PAUSE/RESUME names (all existing pools when none).
fn targets(console: &Console, name: Option<&str>) -> Result<Vec<Arc<DbPool>>, ClientError> {
    match name {
        None => Ok(console.pools.all()),
        Some(name) => console
            .databases
            .pools_of(name)
            .map_err(|_| ClientError::unknown_database(name)),
    }
}

pub(super) async fn pause(console: &Console, name: Option<&str>) -> Result<(), ClientError> {
    let pools = targets(console, name)?;
    console
        .pools
        .pause(&pools)
        .await
        .map_err(|e| ClientError::new("55000", format!("PAUSE: {e}")).hint(crate::pool::PAUSE_HINT))
}

pub(super) fn resume(console: &Console, name: Option<&str>) -> Result<(), ClientError> {
    for db in targets(console, name)? {
        db.pool.resume();
    }
    Ok(())
}
