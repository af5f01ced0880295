//! `ogel reload`, SIGHUP and the console's `RELOAD`: re-read the
//! configuration file and hand it to every part that can apply a new one
//! live (the pools' `[pool]`, the TLS certificate). Other sections take
//! effect at the next `ogel up`. The parts register as
//! [`Reload`](crate::config::Reload)ers, so this module depends on none of them.

use crate::config::{Config, Overrides, Reload, ReloadError};
use std::path::PathBuf;
use std::sync::Arc;

/// Re-reads the file and applies it, in registration order.
pub struct Reloader {
    source: Option<(PathBuf, Overrides)>,
    parts: Vec<Arc<dyn Reload>>,
}

impl Reloader {
    /// A reloader of `source` (where `ogel up` read its configuration).
    pub fn new(source: Option<(PathBuf, Overrides)>, parts: Vec<Arc<dyn Reload>>) -> Self {
        Reloader { source, parts }
    }

    /// Re-reads the file and applies it.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let Some((file, overrides)) = &self.source else {
            return Err(ReloadError::NoSource);
        };
        let config = Config::load(file, overrides)?;
        for part in &self.parts {
            part.reload(&config)?;
        }
        tracing::info!(file = %file.display(), "configuration reloaded: [pool] applied, TLS certificate re-read");
        Ok(())
    }
}
