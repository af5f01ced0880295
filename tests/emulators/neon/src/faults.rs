//! Fault injection for tests, set through `POST /_emulator/faults` (outside
//! the Neon API and its auth):
//!
//! | field | effect |
//! |---|---|
//! | `rate_limit_next: N` | the next N Neon API calls get `429` with `Retry-After` |
//! | `retry_after_seconds: S` | the `Retry-After` of those (default 1) |
//! | `server_error_next: N` | the next N Neon API calls get `500` |
//! | `fail_next_operation: true` | the next operation to run ends `failed` (its effect is not applied) |
//! | `fail_next_operations: N` | the same for the next N operations |
//! | `operation_delay_ms: MS` | every operation stays `running` at least MS (makes 423 observable) |
//! | `down: true` | every Neon API call gets `503`, and the proxy refuses connections, until `down: false` |
//!
//! Fields not given are left as they are; `DELETE /_emulator/faults` clears
//! everything; `GET /_emulator/faults` shows the current settings.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The current fault settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultState {
    /// API calls still to answer with 429.
    pub rate_limit_next: u32,
    /// `Retry-After` of injected 429s, in seconds.
    pub retry_after_seconds: u32,
    /// API calls still to answer with 500.
    pub server_error_next: u32,
    /// Operations still to fail.
    pub fail_next_operations: u32,
    /// Minimum time each operation stays `running`, in milliseconds.
    pub operation_delay_ms: u64,
    /// The API answers 503 and the proxy refuses connections.
    pub down: bool,
}

/// A change to the fault settings (`POST /_emulator/faults`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// See [`FaultState::rate_limit_next`].
    pub rate_limit_next: Option<u32>,
    /// See [`FaultState::retry_after_seconds`].
    pub retry_after_seconds: Option<u32>,
    /// See [`FaultState::server_error_next`].
    pub server_error_next: Option<u32>,
    /// Fail the next operation.
    pub fail_next_operation: Option<bool>,
    /// See [`FaultState::fail_next_operations`].
    pub fail_next_operations: Option<u32>,
    /// See [`FaultState::operation_delay_ms`].
    pub operation_delay_ms: Option<u64>,
    /// See [`FaultState::down`].
    pub down: Option<bool>,
}

/// What an API call must answer because of a fault.
pub(crate) enum ApiFault {
    Down,
    RateLimited { retry_after: u32 },
    ServerError,
}

/// The faults, shared by the API, the operation runner and the proxy.
#[derive(Default)]
pub(crate) struct Faults(Mutex<FaultState>);

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self) -> FaultState {
        self.lock().clone()
    }

    pub(crate) fn clear(&self) {
        *self.lock() = FaultState::default();
    }

    pub(crate) fn apply(&self, req: FaultRequest) -> FaultState {
        let mut state = self.lock();
        if let Some(n) = req.rate_limit_next {
            state.rate_limit_next = n;
        }
        if let Some(s) = req.retry_after_seconds {
            state.retry_after_seconds = s;
        }
        if let Some(n) = req.server_error_next {
            state.server_error_next = n;
        }
        if let Some(fail) = req.fail_next_operation {
            state.fail_next_operations = u32::from(fail);
        }
        if let Some(n) = req.fail_next_operations {
            state.fail_next_operations = n;
        }
        if let Some(ms) = req.operation_delay_ms {
            state.operation_delay_ms = ms;
        }
        if let Some(down) = req.down {
            state.down = down;
        }
        state.clone()
    }

    /// The fault an API call meets, counting it down.
    pub(crate) fn take_api_fault(&self) -> Option<ApiFault> {
        let mut state = self.lock();
        if state.down {
            return Some(ApiFault::Down);
        }
        if state.rate_limit_next > 0 {
            state.rate_limit_next -= 1;
            return Some(ApiFault::RateLimited {
                retry_after: state.retry_after_seconds.max(1),
            });
        }
        if state.server_error_next > 0 {
            state.server_error_next -= 1;
            return Some(ApiFault::ServerError);
        }
        None
    }

    /// Whether the operation about to run must fail, counting it down.
    pub(crate) fn take_operation_failure(&self) -> bool {
        let mut state = self.lock();
        if state.fail_next_operations > 0 {
            state.fail_next_operations -= 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn operation_delay_ms(&self) -> u64 {
        self.lock().operation_delay_ms
    }

    pub(crate) fn down(&self) -> bool {
        self.lock().down
    }
}
