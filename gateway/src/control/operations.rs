//! Long operations running now (create database, create/reset a branch,
//! take/restore a snapshot), by compute, for `GET /v1/operations`. An
//! operation is listed while its guard lives, so an early return or a
//! panic unlists it too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What runs where: compute → (kind, since).
#[derive(Default)]
pub struct Operations {
    running: Mutex<BTreeMap<String, (&'static str, Instant)>>,
}

/// An operation listed until dropped.
pub struct OperationGuard {
    operations: Arc<Operations>,
    compute: String,
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.operations.lock().remove(&self.compute);
    }
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (&'static str, Instant)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists `kind` on `compute` as running until the guard is dropped.
    pub fn start(self: &Arc<Self>, compute: &str, kind: &'static str) -> OperationGuard {
        self.lock()
            .insert(compute.to_string(), (kind, Instant::now()));
        OperationGuard {
            operations: self.clone(),
            compute: compute.to_string(),
        }
    }

    /// What runs now: (compute, kind, since).
    pub fn list(&self) -> Vec<(String, &'static str, Instant)> {
        self.lock()
            .iter()
            .map(|(compute, (kind, since))| (compute.clone(), *kind, *since))
            .collect()
    }
}
