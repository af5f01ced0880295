//! The control plane every front end shares: databases, branches and
//! snapshots, tenants and tokens, each a service over the catalog and the
//! backends with its dependencies passed in (`app` builds them). The HTTP
//! API, the admin console, the login path and the gateway's loops call
//! these; nothing here speaks a wire protocol.

pub mod access;
pub mod backups;
pub mod branches;
pub mod databases;
pub mod disk;
pub mod health;
pub mod operations;
pub mod placement;
pub mod reload;
pub mod standby;
pub mod tiers;
pub mod urls;
