//! The catalog: databases, roles, branches, tenants and issued tokens.
//! [`Catalog`] is the typed view every service uses; where the records live
//! is a [`CatalogStore`] — an embedded crash-safe file ([`redb::RedbStore`]),
//! or etcd when several gateways run as one ([`etcd::EtcdStore`]: reads from
//! an in-memory mirror kept by a watch, fenced transactional writes).
//!
//! Records are JSON values keyed by name, so adding a field never needs a
//! migration (missing fields take their defaults). A database is written
//! first as `creating`, then `ready` once its backend finished; on start-up
//! anything still `creating` is a create a crash interrupted, and is undone.

pub mod etcd;
pub mod redb;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The tables of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Databases, by name.
    Databases,
    /// Roles of the gateway's role store, by name.
    Roles,
    /// Branches other than `main`, keyed `database@branch`.
    Branches,
    /// Tenants, by name.
    Tenants,
    /// Issued tokens (ids and claims, never the token), by id.
    Tokens,
    /// Cluster-wide records (the leader's beat), by name.
    Cluster,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 6] = [
        Table::Databases,
        Table::Roles,
        Table::Branches,
        Table::Tenants,
        Table::Tokens,
        Table::Cluster,
    ];

    /// Its name in the store.
    pub fn name(self) -> &'static str {
        match self {
            Table::Databases => "databases",
            Table::Roles => "roles",
            Table::Branches => "branches",
            Table::Tenants => "tenants",
            Table::Tokens => "tokens",
            Table::Cluster => "cluster",
        }
    }
}

/// One write of a batch: a table, a key, and the new value (`None` deletes).
pub type WriteOp<'a> = (Table, &'a str, Option<Vec<u8>>);

/// Where catalog records live. Every method is one durable step: a
/// [`write`](CatalogStore::write) batch is applied whole or not at all, and
/// is durable when it returns.
pub trait CatalogStore: Send + Sync {
    /// The value at `key`, if any.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, CatalogError>;
    /// Every value of `table`, in key order.
    fn list(&self, table: Table) -> Result<Vec<Vec<u8>>, CatalogError>;
    /// Applies puts and deletes in one transaction.
    fn write(&self, ops: &[WriteOp<'_>]) -> Result<(), CatalogError>;
    /// Applies `ops` only if every `expect`ed key holds exactly that value
    /// (`None`: absent), else refuses with [`CatalogError::Changed`]. In
    /// etcd one transaction; the embedded file serves one gateway, which
    /// makes these decisions on one task, so a read then a write is enough.
    fn write_if(&self, expect: &[WriteOp<'_>], ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        for (table, key, value) in expect {
            if self.get(*table, key)? != *value {
                return Err(CatalogError::Changed {
                    key: format!("{}/{key}", table.name()),
                });
            }
        }
        self.write(ops)
    }
}

/// The tenant of databases made without one (and of the global admin).
pub const DEFAULT_TENANT: &str = "default";

fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
        table: table.name(),
        source,
    })
}

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

/// A catalog failure (disk, corruption), with its cause.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store failed to `action` (open, begin, read, write, commit).
    #[error("catalog: could not {action}")]
    Store {
        /// What it was doing.
        action: &'static str,
        /// The store's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record is not what this gateway can read.
    #[error("catalog: a record of table {table} could not be decoded")]
    Decode {
        /// The table's name.
        table: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("catalog: a record could not be encoded")]
    Encode(#[source] serde_json::Error),
    /// A fenced write whose fence no longer holds (the lease or leadership
    /// it stood for is gone or was taken over); nothing was written.
    #[error("catalog: this gateway no longer holds its lease (fenced); the write was refused")]
    Fenced {
        /// The fence key whose creation revision no longer matched.
        key: String,
    },
    /// A conditional write found a record changed since it was read;
    /// nothing was written.
    #[error("catalog: {key} changed meanwhile; the write was refused")]
    Changed {
        /// The record's table and key.
        key: String,
    },
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
    /// The gateway whose disk and computes serve it, in a cluster (`None`
    /// on a single gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `ogel chaos run` may inject faults into it (`ogel chaos allow`).
    #[serde(default)]
    pub chaos_allowed: bool,
    /// Its standby on another gateway of the cluster, when it has one
    /// (`control/placement.rs`); `None` on a single gateway, whose
    /// standbys are local and the backend's own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyPlacement>,
}

/// Where a database's standby is, in a cluster, and whether it may take
/// over.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct StandbyPlacement {
    /// The gateway whose disk holds the standby (`None` while none is
    /// chosen: no other gateway is live).
    pub node: Option<String>,
    /// The standby has every acknowledged commit and commits wait for it:
    /// it may take over. Set by the primary's gateway after a reading with
    /// synchronous replication on and nothing left to replay; cleared by it
    /// (first, under its fence) before it stops waiting for the standby.
    pub in_sync: bool,
}

/// The leader's beat (`Table::Cluster`, key `leader`): written by the
/// leader every few hundred milliseconds under its fence, so a deposed
/// leader's late beats are refused and the generation here never goes
/// back.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct LeaderBeat {
    /// The leader's node name.
    pub node: String,
    /// Its generation.
    pub generation: i64,
    /// Unix milliseconds of the beat.
    pub at_unix_ms: u64,
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
        crate::names::compute_name(&self.database, &self.name)
    }
}

/// The catalog, typed: records in, records out, over any store.
#[derive(Clone)]
pub struct Catalog {
    store: Arc<dyn CatalogStore>,
}

impl Catalog {
    /// Opens or creates the embedded catalog file.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        Ok(Catalog::over(Arc::new(redb::RedbStore::open(path)?)))
    }

    /// A catalog over `store`.
    pub fn over(store: Arc<dyn CatalogStore>) -> Catalog {
        Catalog { store }
    }

    fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, CatalogError> {
        match self.store.get(table, key)? {
            Some(v) => decode(table, &v).map(Some),
            None => Ok(None),
        }
    }

    fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, CatalogError> {
        self.store
            .list(table)?
            .iter()
            .map(|v| decode(table, v))
            .collect()
    }

    fn write(&self, ops: &[WriteOp<'_>]) -> Result<(), CatalogError> {
        self.store.write(ops)
    }

    fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CatalogError> {
        serde_json::to_vec(value).map_err(CatalogError::Encode)
    }

    /// The leader's last beat, if a leader ever beat.
    pub fn leader_beat(&self) -> Result<Option<LeaderBeat>, CatalogError> {
        self.get(Table::Cluster, "leader")
    }

    /// Records the leader's beat (refused by the store's fence once this
    /// gateway no longer leads).
    pub fn put_leader_beat(&self, beat: &LeaderBeat) -> Result<(), CatalogError> {
        self.write(&[(Table::Cluster, "leader", Some(Self::encode(beat)?))])
    }

    /// Copies every record into `into` (`ogel cluster import`), databases
    /// marked as served by `node`; how many records were written.
    pub fn copy_into(&self, into: &Catalog, node: &str) -> Result<usize, CatalogError> {
        let mut ops: Vec<(Table, String, Vec<u8>)> = Vec::new();
        for mut db in self.databases()? {
            db.node.get_or_insert_with(|| node.to_string());
            ops.push((Table::Databases, db.name.clone(), Self::encode(&db)?));
        }
        for role in self.list::<RoleRecord>(Table::Roles)? {
            ops.push((Table::Roles, role.name.clone(), Self::encode(&role)?));
        }
        for branch in self.list::<BranchRecord>(Table::Branches)? {
            ops.push((Table::Branches, branch.key(), Self::encode(&branch)?));
        }
        for tenant in self.tenants()? {
            ops.push((Table::Tenants, tenant.name.clone(), Self::encode(&tenant)?));
        }
        for token in self.list::<TokenRecord>(Table::Tokens)? {
            ops.push((Table::Tokens, token.id.clone(), Self::encode(&token)?));
        }
        // A batch at a time: etcd bounds the operations of one transaction.
        for chunk in ops.chunks(64) {
            let batch: Vec<WriteOp<'_>> = chunk
                .iter()
                .map(|(t, k, v)| (*t, k.as_str(), Some(v.clone())))
                .collect();
            into.write(&batch)?;
        }
        Ok(ops.len())
    }

    /// Whether the catalog holds no database, role or tenant.
    pub fn is_empty(&self) -> Result<bool, CatalogError> {
        Ok(self.databases()?.is_empty()
            && self.list::<RoleRecord>(Table::Roles)?.is_empty()
            && self.tenants()?.is_empty())
    }

    /// Whether a tenant exists (the default one always does).
    pub fn tenant_exists(&self, name: &str) -> Result<bool, CatalogError> {
        Ok(name == DEFAULT_TENANT || self.tenant(name)?.is_some())
    }

    /// Whether `branch` of `database` exists (`main` always does).
    pub fn branch_exists(&self, database: &str, branch: &str) -> Result<bool, CatalogError> {
        Ok(branch == crate::names::MAIN_BRANCH || self.branch(database, branch)?.is_some())
    }

    /// One database.
    pub fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, CatalogError> {
        self.get(Table::Databases, name)
    }

    /// Every database, by name.
    pub fn databases(&self) -> Result<Vec<DatabaseRecord>, CatalogError> {
        self.list(Table::Databases)
    }

    /// One role.
    pub fn role(&self, name: &str) -> Result<Option<RoleRecord>, CatalogError> {
        self.get(Table::Roles, name)
    }

    /// Writes a database and its owner role together.
    pub fn put_database(
        &self,
        db: &DatabaseRecord,
        owner: &RoleRecord,
    ) -> Result<(), CatalogError> {
        self.write(&[
            (Table::Databases, &db.name, Some(Self::encode(db)?)),
            (Table::Roles, &owner.name, Some(Self::encode(owner)?)),
        ])
    }

    /// Rewrites a database's record (its settings), keeping its role.
    pub fn update_database(&self, db: &DatabaseRecord) -> Result<(), CatalogError> {
        self.write(&[(Table::Databases, &db.name, Some(Self::encode(db)?))])
    }

    /// Replaces `old` by `new` only if the stored record is still `old`
    /// ([`CatalogError::Changed`] otherwise): a decision taken on a reading
    /// lands only if the reading still holds.
    pub fn swap_database(
        &self,
        old: &DatabaseRecord,
        new: &DatabaseRecord,
    ) -> Result<(), CatalogError> {
        let key = old.name.as_str();
        let changed = || CatalogError::Changed {
            key: format!("databases/{key}"),
        };
        // The stored bytes, so a record another version encoded compares.
        let stored = self.store.get(Table::Databases, key)?.ok_or_else(changed)?;
        if decode::<DatabaseRecord>(Table::Databases, &stored)? != *old {
            return Err(changed());
        }
        self.store.write_if(
            &[(Table::Databases, key, Some(stored))],
            &[(Table::Databases, key, Some(Self::encode(new)?))],
        )
    }

    /// A cluster-wide value at `key` (`Table::Cluster`), set to `value`
    /// first if absent: the value every gateway then agrees on.
    pub fn agree<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<T, CatalogError> {
        match self.store.write_if(
            &[(Table::Cluster, key, None)],
            &[(Table::Cluster, key, Some(Self::encode(value)?))],
        ) {
            Ok(()) => Ok(self
                .get(Table::Cluster, key)?
                .ok_or(CatalogError::Changed {
                    key: format!("cluster/{key}"),
                })?),
            Err(CatalogError::Changed { .. }) => {
                self.get(Table::Cluster, key)?.ok_or(CatalogError::Changed {
                    key: format!("cluster/{key}"),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a role.
    pub fn put_role(&self, role: &RoleRecord) -> Result<(), CatalogError> {
        self.write(&[(Table::Roles, &role.name, Some(Self::encode(role)?))])
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
        let mut ops: Vec<WriteOp<'_>> = vec![
            (Table::Databases, &db.name, None),
            (Table::Roles, &db.owner, None),
        ];
        ops.extend(branches.iter().map(|k| (Table::Branches, k.as_str(), None)));
        ops.extend(tokens.iter().map(|k| (Table::Tokens, k.as_str(), None)));
        self.write(&ops)
    }

    /// A branch (`None` for `main`, which is not stored, and for unknown ones).
    pub fn branch(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<Option<BranchRecord>, CatalogError> {
        self.get(
            Table::Branches,
            &crate::names::compute_name(database, branch),
        )
    }

    /// The branches of `database` (all databases' when empty).
    pub fn branches(&self, database: &str) -> Result<Vec<BranchRecord>, CatalogError> {
        Ok(self
            .list::<BranchRecord>(Table::Branches)?
            .into_iter()
            .filter(|b| database.is_empty() || b.database == database)
            .collect())
    }

    /// Records a branch.
    pub fn put_branch(&self, branch: &BranchRecord) -> Result<(), CatalogError> {
        self.write(&[(Table::Branches, &branch.key(), Some(Self::encode(branch)?))])
    }

    /// One tenant.
    pub fn tenant(&self, name: &str) -> Result<Option<TenantRecord>, CatalogError> {
        self.get(Table::Tenants, name)
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, CatalogError> {
        self.list(Table::Tenants)
    }

    /// Records a tenant.
    pub fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), CatalogError> {
        self.write(&[(Table::Tenants, &tenant.name, Some(Self::encode(tenant)?))])
    }

    /// Forgets a tenant.
    pub fn remove_tenant(&self, name: &str) -> Result<(), CatalogError> {
        self.write(&[(Table::Tenants, name, None)])
    }

    /// One issued token.
    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>, CatalogError> {
        self.get(Table::Tokens, id)
    }

    /// Issued tokens of `database` (every database's when empty).
    pub fn tokens(&self, database: &str) -> Result<Vec<TokenRecord>, CatalogError> {
        Ok(self
            .list::<TokenRecord>(Table::Tokens)?
            .into_iter()
            .filter(|t| database.is_empty() || t.database == database)
            .collect())
    }

    /// Records an issued (or revoked) token.
    pub fn put_token(&self, token: &TokenRecord) -> Result<(), CatalogError> {
        self.write(&[(Table::Tokens, &token.id, Some(Self::encode(token)?))])
    }

    /// Forgets a branch.
    pub fn remove_branch(&self, database: &str, branch: &str) -> Result<(), CatalogError> {
        self.write(&[(
            Table::Branches,
            &crate::names::compute_name(database, branch),
            None,
        )])
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
                node: None,
                chaos_allowed: false,
                standby: None,
            },
            RoleRecord {
                name: format!("{name}_owner"),
                verifier: "SCRAM-SHA-256$4096:c2FsdA==$a:b".into(),
                databases: vec![name.into()],
            },
        )
    }

    #[test]
    fn a_swap_lands_only_on_the_record_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.redb")).unwrap();
        let (db, role) = record("shop");
        catalog.put_database(&db, &role).unwrap();
        let mut moved = db.clone();
        moved.node = Some("b".into());
        moved.standby = Some(StandbyPlacement::default());
        catalog.swap_database(&db, &moved).unwrap();
        assert_eq!(catalog.database("shop").unwrap(), Some(moved.clone()));
        // A second decision taken on the old reading is refused.
        let mut other = db.clone();
        other.node = Some("c".into());
        assert!(matches!(
            catalog.swap_database(&db, &other),
            Err(CatalogError::Changed { .. })
        ));
        assert_eq!(catalog.database("shop").unwrap(), Some(moved));
    }

    #[test]
    fn the_first_value_proposed_is_agreed() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("c.redb")).unwrap();
        assert_eq!(catalog.agree("k", &"first".to_string()).unwrap(), "first");
        assert_eq!(catalog.agree("k", &"second".to_string()).unwrap(), "first");
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
