//! The catalog: databases and roles, in an embedded crash-safe store (redb:
//! copy-on-write B-trees, each commit durable when it returns).
//!
//! Records are JSON values keyed by name, so adding a field never needs a
//! migration (missing fields take their defaults). A database is written
//! first as `creating`, then `ready` once its backend finished; on start-up
//! anything still `creating` is a create a crash interrupted, and is undone.

use redb::{Database, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;

const DATABASES: TableDefinition<&str, &[u8]> = TableDefinition::new("databases");
const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("roles");
/// Branches other than `main`, keyed `database@branch`.
const BRANCHES: TableDefinition<&str, &[u8]> = TableDefinition::new("branches");
/// Tenants, by name.
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");
/// Issued tokens (ids and claims, never the token), by id.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// The tenant of databases made without one (and of the global admin).
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

/// A catalog failure (disk, corruption); the message says what failed.
#[derive(Debug, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(String);

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> CatalogError + '_ {
    move |e| CatalogError(format!("{what}: {e}"))
}

/// Where a database is in its life.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseState {
    /// The backend is creating it; not yet usable.
    Creating,
    /// Usable.
    Ready,
}

/// A database as the catalog knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseRecord {
    /// Name clients use.
    pub name: String,
    /// Backend that stores it.
    pub backend: String,
    /// Owner role (in the gateway's role store and inside the compute).
    pub owner: String,
    /// Lifecycle state.
    pub state: DatabaseState,
    /// Unix time of creation.
    pub created_at_unix: u64,
    /// Idle seconds before suspend; `None` = the gateway's default, `0` = never.
    #[serde(default)]
    pub suspend_after_secs: Option<u64>,
    /// Computes of this database (main first, then branches) kept running.
    #[serde(default)]
    pub min_warm: u32,
    /// The tenant that owns it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

/// A tenant: owns databases; its admin token sees only them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantRecord {
    /// Name.
    pub name: String,
    /// SHA-256 (hex) of its admin API token (the token itself is shown once).
    pub token_sha256: String,
    /// Clients at once across its databases (`None`: `limits.clients_per_tenant`).
    #[serde(default)]
    pub max_clients: Option<u32>,
    /// Unix time of creation.
    pub created_at_unix: u64,
}

/// A token the gateway issued: what it grants, never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenRecord {
    /// Token id (its `jti`).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Database.
    pub database: String,
    /// Branch.
    pub branch: String,
    /// Read-only.
    pub read_only: bool,
    /// Signing key id.
    pub kid: String,
    /// Unix time issued.
    pub issued_at_unix: u64,
    /// Unix time it expires.
    pub expires_at_unix: u64,
    /// Unix time it was revoked, if it was.
    #[serde(default)]
    pub revoked_at_unix: Option<u64>,
}

/// A role of the gateway's role store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleRecord {
    /// Role name clients log in as.
    pub name: String,
    /// SCRAM-SHA-256 verifier (never the password).
    pub verifier: String,
    /// Databases this role may connect to.
    pub databases: Vec<String>,
}

/// One write of a batch: a table, a key, and the new value (`None` deletes).
/// A branch of a database (other than `main`, which every database has).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BranchRecord {
    /// The database.
    pub database: String,
    /// The branch.
    pub name: String,
    /// The branch it was made from.
    pub parent: String,
    /// Unix time it was made.
    pub created_at_unix: u64,
    /// Unix time it is deleted (TTL), if any.
    #[serde(default)]
    pub expires_at_unix: Option<u64>,
}

impl BranchRecord {
    /// Its key and compute name: `database@branch`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.database, self.name)
    }
}

type WriteOp<'a> = (
    TableDefinition<'static, &'static str, &'static [u8]>,
    &'a str,
    Option<Vec<u8>>,
);

/// The catalog store.
pub struct Catalog {
    db: Database,
}

impl Catalog {
    /// Opens or creates the catalog file.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let db = Database::create(path).map_err(err("open the catalog"))?;
        let txn = db.begin_write().map_err(err("begin"))?;
        txn.open_table(DATABASES).map_err(err("open table"))?;
        txn.open_table(ROLES).map_err(err("open table"))?;
        txn.open_table(BRANCHES).map_err(err("open table"))?;
        txn.open_table(TENANTS).map_err(err("open table"))?;
        txn.open_table(TOKENS).map_err(err("open table"))?;
        txn.commit().map_err(err("commit"))?;
        Ok(Catalog { db })
    }

    fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, CatalogError> {
        let txn = self.db.begin_read().map_err(err("begin"))?;
        let table = txn.open_table(table).map_err(err("open table"))?;
        match table.get(key).map_err(err("read"))? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(err("decode a record")),
            None => Ok(None),
        }
    }

    fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, CatalogError> {
        let txn = self.db.begin_read().map_err(err("begin"))?;
        let table = txn.open_table(table).map_err(err("open table"))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err("read"))? {
            let (_, v) = entry.map_err(err("read"))?;
            out.push(serde_json::from_slice(v.value()).map_err(err("decode a record"))?);
        }
        Ok(out)
    }

    /// Applies puts and deletes in one durable transaction.
    fn write(&self, ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(err("begin"))?;
        for (table, key, value) in ops {
            let mut table = txn.open_table(*table).map_err(err("open table"))?;
            match value {
                Some(v) => {
                    table.insert(*key, v.as_slice()).map_err(err("write"))?;
                }
                None => {
                    table.remove(*key).map_err(err("delete"))?;
                }
            }
        }
        txn.commit().map_err(err("commit"))
    }

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogError> {
        serde_json::to_vec(value).map_err(err("encode a record"))
    }

    /// One database.
    pub fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, CatalogError> {
        self.get(DATABASES, name)
    }

    /// Every database, by name.
    pub fn databases(&self) -> Result<Vec<DatabaseRecord>, CatalogError> {
        self.list(DATABASES)
    }

    /// One role.
    pub fn role(&self, name: &str) -> Result<Option<RoleRecord>, CatalogError> {
        self.get(ROLES, name)
    }

    /// Writes a database and its owner role together.
    pub fn put_database(
        &self,
        db: &DatabaseRecord,
        owner: &RoleRecord,
    ) -> Result<(), CatalogError> {
        self.write(&[
            (DATABASES, &db.name, Some(Self::encode(db)?)),
            (ROLES, &owner.name, Some(Self::encode(owner)?)),
        ])
    }

    /// Writes a role.
    pub fn put_role(&self, role: &RoleRecord) -> Result<(), CatalogError> {
        self.write(&[(ROLES, &role.name, Some(Self::encode(role)?))])
    }

    /// Removes a database and its owner role together.
    pub fn remove_database(&self, db: &DatabaseRecord) -> Result<(), CatalogError> {
        let branches: Vec<String> = self
            .branches(&db.name)?
            .iter()
            .map(BranchRecord::key)
            .collect();
        // Its tokens go too: a new database of the same name must not
        // accept them (they would fail the tenant check only if it moved).
        let tokens: Vec<String> = self.tokens(&db.name)?.into_iter().map(|t| t.id).collect();
        let mut ops: Vec<WriteOp<'_>> = vec![(DATABASES, &db.name, None), (ROLES, &db.owner, None)];
        ops.extend(branches.iter().map(|k| (BRANCHES, k.as_str(), None)));
        ops.extend(tokens.iter().map(|k| (TOKENS, k.as_str(), None)));
        self.write(&ops)
    }

    /// A branch (`None` for `main`, which is not stored, and for unknown ones).
    pub fn branch(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<Option<BranchRecord>, CatalogError> {
        self.get(BRANCHES, &format!("{database}@{branch}"))
    }

    /// The branches of `database` (all databases' when empty).
    pub fn branches(&self, database: &str) -> Result<Vec<BranchRecord>, CatalogError> {
        Ok(self
            .list::<BranchRecord>(BRANCHES)?
            .into_iter()
            .filter(|b| database.is_empty() || b.database == database)
            .collect())
    }

    /// Records a branch.
    pub fn put_branch(&self, branch: &BranchRecord) -> Result<(), CatalogError> {
        self.write(&[(BRANCHES, &branch.key(), Some(Self::encode(branch)?))])
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, CatalogError> {
        self.get(TENANTS, name)
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, CatalogError> {
        self.list(TENANTS)
    }

    /// Records a tenant.
    pub fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), CatalogError> {
        self.write(&[(TENANTS, &tenant.name, Some(Self::encode(tenant)?))])
    }

    /// Forgets a tenant.
    pub fn remove_tenant(&self, name: &str) -> Result<(), CatalogError> {
        self.write(&[(TENANTS, name, None)])
    }

    /// One issued token.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, CatalogError> {
        self.get(TOKENS, id)
    }

    /// Issued tokens of `database` (every database's when empty).
    pub fn tokens(&self, database: &str) -> Result<Vec<TokenRecord>, CatalogError> {
        Ok(self
            .list::<TokenRecord>(TOKENS)?
            .into_iter()
            .filter(|t| database.is_empty() || t.database == database)
            .collect())
    }

    /// Records an issued (or revoked) token.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), CatalogError> {
        self.write(&[(TOKENS, &token.id, Some(Self::encode(token)?))])
    }

    /// Forgets a branch.
    pub fn remove_branch(&self, database: &str, branch: &str) -> Result<(), CatalogError> {
        self.write(&[(BRANCHES, &format!("{database}@{branch}"), None)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> (DatabaseRecord, RoleRecord) {
        (
            DatabaseRecord {
                name: name.into(),
                backend: "native".into(),
                owner: format!("{name}_owner"),
                state: DatabaseState::Ready,
                created_at_unix: 1,
                suspend_after_secs: None,
                min_warm: 0,
                tenant: DEFAULT_TENANT.into(),
            },
            RoleRecord {
                name: format!("{name}_owner"),
                verifier: "SCRAM-SHA-256$4096:c2FsdA==$a:b".into(),
                databases: vec![name.into()],
            },
        )
    }

    #[test]
    fn survives_reopen_and_removes_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        {
            let catalog = Catalog::open(&path).unwrap();
            let (db, role) = record("shop");
            catalog.put_database(&db, &role).unwrap();
            let (db, role) = record("app");
            catalog.put_database(&db, &role).unwrap();
        }
        let catalog = Catalog::open(&path).unwrap();
        let names: Vec<_> = catalog
            .databases()
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, vec!["app", "shop"]);
        let shop = catalog.database("shop").unwrap().unwrap();
        assert!(catalog.role("shop_owner").unwrap().is_some());
        catalog.remove_database(&shop).unwrap();
        assert!(catalog.database("shop").unwrap().is_none());
        assert!(catalog.role("shop_owner").unwrap().is_none());
        assert!(catalog.role("app_owner").unwrap().is_some());
    }
}
