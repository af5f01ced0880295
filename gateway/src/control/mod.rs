//! The control plane every front end shares: databases, branches and
//! snapshots, tenants and tokens, each a service over the catalog and the
//! backends. The HTTP API, the CLI (through the API), the admin console and
//! the gateway's own loops call these; nothing here speaks a wire protocol.

pub mod access;
pub mod branches;
pub mod databases;
