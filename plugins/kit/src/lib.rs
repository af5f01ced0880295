//! What every OgelBase backend plugin would otherwise write itself, in one
//! place: passwords derived from a key ([`secrets`]), the rustls client
//! configuration for computes behind TLS ([`tls`], feature `tls`, on by
//! default), SQL identifier and literal quoting ([`sql`]), the read-only
//! role read-only clients log in as ([`readonly`]), the clock
//! ([`time`]) and how full a filesystem is ([`disk`]).
//!
//! The crate depends on the SDK (`ogel-plugin-sdk`) and on no backend, so
//! in-tree backends and out-of-tree plugins use it alike. Nothing here
//! panics on input: every fallible helper returns a typed error.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod disk;
pub mod readonly;
pub mod secrets;
pub mod sql;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod url;

pub use ogel_plugin_sdk as sdk;
