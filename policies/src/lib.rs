//! Machinery every OgelBase backend gets for free, whatever stores its data:
//! wake coalescing and client tracking ([`lifecycle`]) and idle suspend
//! ([`scale_to_zero`]), server-connection pools ([`pool`]), expiry of preview
//! branches ([`ttl_reaper`]), warm computes and pre-wake ([`warm`]). Later:
//! caching, leases.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod lifecycle;
pub mod pool;
pub mod scale_to_zero;
pub mod ttl_reaper;
pub mod warm;

pub use lifecycle::{ActiveClient, Lifecycle, LifecycleStats};
pub use pool::{Pool, PoolSettings};
