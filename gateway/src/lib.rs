//! The OgelBase gateway as a library: one stable Postgres endpoint in front
//! of interchangeable backends. `main.rs` only parses the command line and
//! calls in here.
//!
//! A client's connection flows one way through the stages, one module each:
//!
//! ```text
//! accept/  listeners, SSL/GSS negotiation, TLS, connection limits
//!   → auth/   SCRAM, token logins, signing keys
//!   → route/  startup parameters / SNI / options / token claims → Route
//!   → wake/   the backend registry; Lifecycle wakes the compute
//!   → pool/   pools of logged-in server connections, compute login
//!   → relay/  one task per client: response queue, prepared statements,
//!             session state, generic over the client's and the server's
//!             AsyncRead + AsyncWrite (tested in-process over duplex pipes)
//! ```
//!
//! Beside them: `wire/` (the one Postgres codec, both sides), `control/`
//! (databases, branches, tenants and tokens as services), `catalog/` (where
//! that state lives), `admin/` (the console database), `api/` (REST and
//! `/metrics`), `cli/` (a client of the API), `app` (the composition root
//! that builds the services and starts listeners and loops).
//! Leaf modules (`names`, `config`, `report`, `error`, `wire`) import no feature module.

#![warn(unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod accept;
pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error;
pub mod names;
pub mod pool;
pub mod relay;
pub mod report;
pub mod route;
pub mod wake;
pub mod wire;
