//! The embedded catalog store: one redb file (copy-on-write B-trees, each
//! commit durable when it returns), one table per [`Table`], values as the
//! JSON bytes [`Catalog`](super::Catalog) hands it.

use super::{CatalogError, CatalogStore, Table, WriteOp};
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;

/// A catalog in one local file.
pub struct RedbStore {
    db: Database,
}

fn definition(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    action: &'static str,
) -> impl Fn(E) -> CatalogError {
    move |e| CatalogError::Store {
        action,
        source: Box::new(e),
    }
}

impl RedbStore {
    /// Opens or creates the file, with every table.
    pub fn open(path: &Path) -> Result<RedbStore, CatalogError> {
        let db = Database::create(path).map_err(failed("open the catalog file"))?;
        let txn = db.begin_write().map_err(failed("begin a write"))?;
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(failed("open a table"))?;
        }
        txn.commit().map_err(failed("commit"))?;
        Ok(RedbStore { db })
    }
}

impl CatalogStore for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, CatalogError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(failed("open a table"))?;
        Ok(t.get(key)
            .map_err(failed("read"))?
            .map(|v| v.value().to_vec()))
    }

    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, CatalogError> {
        let txn = self.db.begin_read().map_err(failed("begin a read"))?;
        let t = txn
            .open_table(definition(table))
            .map_err(failed("open a table"))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(failed("read"))? {
            let (_, v) = entry.map_err(failed("read"))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(failed("begin a write"))?;
        for (table, key, value) in ops {
            let mut t = txn
                .open_table(definition(*table))
                .map_err(failed("open a table"))?;
            match value {
                Some(v) => {
                    t.insert(*key, v.as_slice()).map_err(failed("write"))?;
                }
                None => {
                    t.remove(*key).map_err(failed("delete"))?;
                }
            }
        }
        txn.commit().map_err(failed("commit"))
    }
}
