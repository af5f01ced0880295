//! The plugin side of the ABI: [`export_backend!`](crate::export_backend)
//! turns a [`Backend`] constructor into the C entry point the gateway loads.
//! Each instance owns a tokio runtime; a call blocks the gateway's calling
//! thread (the gateway calls from its blocking pool) while the runtime
//! drives the backend's future. Panics are caught at the boundary and
//! become `Internal` errors of that call.

use crate::abi::RawBuffer;
use crate::wire::{Request, Response};
use crate::{Backend, BackendError};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A live instance: the backend and the runtime that drives it.
pub struct Instance {
    backend: Box<dyn Backend>,
    runtime: tokio::runtime::Runtime,
}

/// Turns a backend type's constructor into the plugin entry point.
///
/// ```ignore
/// ogel_plugin_sdk::export_backend!("external", MyBackend::from_config);
/// ```
/// where `from_config: fn(serde_json::Value) -> Result<MyBackend, BackendError>`
/// runs inside the instance's tokio runtime context.
#[macro_export]
macro_rules! export_backend {
    ($name:literal, $constructor:path) => {
        unsafe extern "C" fn __ogel_create(
            config: *const u8,
            config_len: usize,
            out: *mut $crate::abi::RawBuffer,
        ) -> *mut ::std::ffi::c_void {
            $crate::export::create(config, config_len, out, env!("CARGO_CRATE_NAME"), |value| {
                $constructor(value).map(|b| Box::new(b) as Box<dyn $crate::Backend>)
            })
        }

        static __OGEL_DESCRIPTOR: $crate::abi::PluginDescriptor = $crate::abi::PluginDescriptor {
            magic: $crate::abi::DESCRIPTOR_MAGIC,
            abi_major: $crate::abi::ABI_MAJOR,
            abi_minor: $crate::abi::ABI_MINOR,
            sdk_version: $crate::abi::SDK_VERSION.as_ptr() as *const ::std::ffi::c_char,
            rustc_version: $crate::abi::RUSTC_VERSION.as_ptr() as *const ::std::ffi::c_char,
            target: $crate::abi::TARGET.as_ptr() as *const ::std::ffi::c_char,
            plugin_name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
            plugin_version: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr()
                as *const ::std::ffi::c_char,
            create: __ogel_create,
            call: $crate::export::call,
            free_buffer: $crate::export::free_buffer,
            destroy: $crate::export::destroy,
        };

        /// The OgelBase plugin entry point.
        #[no_mangle]
        pub extern "C" fn ogel_plugin_entry() -> *const $crate::abi::PluginDescriptor {
            &__OGEL_DESCRIPTOR
        }
    };
}

/// Writes `response` to `out` (if `out` is not null).
unsafe fn write_out(out: *mut RawBuffer, response: &Response) {
    if !out.is_null() {
        *out = RawBuffer::from_vec(response.to_bytes());
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Implementation of the descriptor's `create`, used by [`export_backend!`](crate::export_backend).
///
/// # Safety
/// `config` must point to `config_len` readable bytes; `out` must be null or writable.
pub unsafe fn create(
    config: *const u8,
    config_len: usize,
    out: *mut RawBuffer,
    log_target: &str,
    constructor: impl FnOnce(serde_json::Value) -> Result<Box<dyn Backend>, BackendError>,
) -> *mut c_void {
    let bytes = if config.is_null() {
        &[][..]
    } else {
        std::slice::from_raw_parts(config, config_len)
    };
    // A plugin library has its own copy of `tracing`: give it a subscriber
    // that writes to the gateway's stderr with the same filter (`OGEL_LOG`),
    // so the plugin's log lines land in the gateway's log. (Linked into the
    // gateway itself, one is set already and this does nothing.)
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OGEL_LOG")
                .unwrap_or_else(|_| format!("warn,{log_target}=info").into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<Instance, BackendError> {
        let value: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(bytes).map_err(|e| {
                BackendError::new(
                    crate::BackendErrorKind::InvalidRequest,
                    format!("plugin configuration is not JSON: {e}"),
                )
            })?
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ogel-plugin")
            .enable_all()
            .build()
            .map_err(|e| {
                BackendError::internal(format!("plugin could not start its runtime: {e}"))
            })?;
        let backend = {
            let _context = runtime.enter();
            constructor(value)?
        };
        Ok(Instance { backend, runtime })
    }));
    match result {
        Ok(Ok(instance)) => Box::into_raw(Box::new(instance)) as *mut c_void,
        Ok(Err(e)) => {
            write_out(out, &Response::error(e));
            std::ptr::null_mut()
        }
        Err(panic) => {
            write_out(
                out,
                &Response::error(BackendError::internal(format!(
                    "plugin panicked while starting: {}",
                    panic_message(&*panic)
                ))),
            );
            std::ptr::null_mut()
        }
    }
}

async fn dispatch(backend: &dyn Backend, request: Request) -> Response {
    match request {
        Request::Capabilities => Response::from_result(Ok(backend.capabilities())),
        Request::Describe => Response::from_result(Ok(backend.describe())),
        Request::CreateDatabase { spec } => {
            Response::from_result(backend.create_database(&spec).await)
        }
        Request::DeleteDatabase { name } => {
            Response::from_result(backend.delete_database(&name).await)
        }
        Request::EnsureRunning { name } => {
            Response::from_result(backend.ensure_running(&name).await)
        }
        Request::Suspend { name } => Response::from_result(backend.suspend(&name).await),
        Request::ComputeStatus { name } => {
            Response::from_result(backend.compute_status(&name).await)
        }
        Request::Health => Response::from_result(backend.health().await),
        Request::ListDatabases => Response::from_result(backend.list_databases().await),
        Request::CreateBranch { spec } => Response::from_result(backend.create_branch(&spec).await),
        Request::DeleteBranch { database, branch } => {
            Response::from_result(backend.delete_branch(&database, &branch).await)
        }
        Request::ResetBranch { database, branch } => {
            Response::from_result(backend.reset_branch(&database, &branch).await)
        }
        Request::CreateSnapshot { database, branch } => {
            Response::from_result(backend.create_snapshot(&database, &branch).await)
        }
        Request::ListSnapshots { database } => {
            Response::from_result(backend.list_snapshots(&database).await)
        }
        Request::RestoreSnapshot {
            database,
            snapshot,
            as_branch,
        } => Response::from_result(
            backend
                .restore_snapshot(&database, &snapshot, &as_branch)
                .await,
        ),
        Request::Progress { name } => Response::from_result(backend.progress(&name).await),
        Request::CreateBackup {
            database,
            branch,
            full,
        } => Response::from_result(backend.create_backup(&database, &branch, full).await),
        Request::ListBackups { database } => {
            Response::from_result(backend.list_backups(&database).await)
        }
        Request::RestoreBackup { spec } => {
            Response::from_result(backend.restore_backup(&spec).await)
        }
        Request::ArchiveStatus { name } => {
            Response::from_result(backend.archive_status(&name).await)
        }
        Request::Tier { name } => Response::from_result(backend.tier(&name).await),
        Request::SetTier { name, tier } => {
            Response::from_result(backend.set_tier(&name, tier).await)
        }
        Request::SetStandbys {
            name,
            count,
            synchronous,
        } => Response::from_result(backend.set_standbys(&name, count, synchronous).await),
        Request::StandbyStatus { name } => {
            Response::from_result(backend.standby_status(&name).await)
        }
        Request::Promote { name, why } => Response::from_result(backend.promote(&name, why).await),
        Request::Replicate { name, role } => {
            Response::from_result(backend.replicate(&name, role).await)
        }
    }
}

/// Implementation of the descriptor's `call`.
///
/// # Safety
/// `instance` must come from `create` of this library and not be destroyed;
/// `request` must point to `request_len` readable bytes; `out` writable.
pub unsafe extern "C" fn call(
    instance: *mut c_void,
    request: *const u8,
    request_len: usize,
    out: *mut RawBuffer,
) {
    if instance.is_null() || request.is_null() {
        write_out(
            out,
            &Response::error(BackendError::internal(
                "plugin called without an instance or request",
            )),
        );
        return;
    }
    let instance = &*(instance as *const Instance);
    let bytes = std::slice::from_raw_parts(request, request_len);
    let response = catch_unwind(AssertUnwindSafe(|| {
        match serde_json::from_slice::<Request>(bytes) {
            Ok(request) => instance
                .runtime
                .block_on(dispatch(&*instance.backend, request)),
            Err(e) => Response::error(BackendError::new(
                crate::BackendErrorKind::Unsupported,
                format!("this plugin does not understand the request ({e}); upgrade the plugin"),
            )),
        }
    }))
    .unwrap_or_else(|panic| {
        Response::error(BackendError::internal(format!(
            "plugin panicked: {}",
            panic_message(&*panic)
        )))
    });
    write_out(out, &response);
}

/// Implementation of the descriptor's `free_buffer`.
///
/// # Safety
/// `buffer` must have been written by this library and not freed before.
pub unsafe extern "C" fn free_buffer(buffer: RawBuffer) {
    drop(buffer.into_vec());
}

/// Implementation of the descriptor's `destroy`.
///
/// # Safety
/// `instance` must come from `create` of this library; not used afterwards.
pub unsafe extern "C" fn destroy(instance: *mut c_void) {
    if !instance.is_null() {
        let instance = Box::from_raw(instance as *mut Instance);
        let _ = catch_unwind(AssertUnwindSafe(move || {
            let Instance { backend, runtime } = *instance;
            drop(backend);
            runtime.shutdown_background();
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capabilities, ComputeEndpoint, ComputeName, ComputeStatus, DatabaseSpec};

    /// Creates databases; panics on `ensure_running("boom")`.
    struct Toy;

    #[async_trait::async_trait]
    impl Backend for Toy {
        fn name(&self) -> &str {
            "toy"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                suspend: true,
                ..Capabilities::default()
            }
        }
        async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
            if spec.name == "taken" {
                return Err(BackendError::new(
                    crate::BackendErrorKind::AlreadyExists,
                    "taken",
                ));
            }
            Ok(())
        }
        async fn delete_database(&self, _: &str) -> Result<(), BackendError> {
            Ok(())
        }
        async fn ensure_running(
            &self,
            name: &ComputeName,
        ) -> Result<ComputeEndpoint, BackendError> {
            if name.database == "boom" {
                panic!("boom");
            }
            Err(BackendError::not_found(name.to_string()))
        }
        async fn suspend(&self, _: &ComputeName) -> Result<(), BackendError> {
            Ok(())
        }
        async fn compute_status(&self, _: &ComputeName) -> Result<ComputeStatus, BackendError> {
            Ok(ComputeStatus::default())
        }
    }

    /// Drives one request through the C entry points, as the host does.
    unsafe fn roundtrip(instance: *mut c_void, request: &Request) -> Response {
        let bytes = serde_json::to_vec(request).unwrap();
        let mut out = RawBuffer::empty();
        call(instance, bytes.as_ptr(), bytes.len(), &mut out);
        let response =
            serde_json::from_slice(std::slice::from_raw_parts(out.ptr, out.len)).unwrap();
        free_buffer(out);
        response
    }

    #[test]
    fn requests_cross_the_c_boundary_and_panics_stay_inside() {
        unsafe {
            let mut out = RawBuffer::empty();
            let config = b"{}";
            let instance = create(config.as_ptr(), config.len(), &mut out, "test", |_| {
                Ok(Box::new(Toy) as Box<dyn Backend>)
            });
            assert!(!instance.is_null());
            let caps: Capabilities = roundtrip(instance, &Request::Capabilities)
                .into_result()
                .unwrap();
            assert!(caps.suspend);
            let spec = DatabaseSpec {
                name: "taken".into(),
                owner: "o".into(),
            };
            let err = roundtrip(instance, &Request::CreateDatabase { spec })
                .into_result::<()>()
                .unwrap_err();
            assert_eq!(err.kind, crate::BackendErrorKind::AlreadyExists);
            let err = roundtrip(
                instance,
                &Request::EnsureRunning {
                    name: ComputeName::main("boom"),
                },
            )
            .into_result::<ComputeEndpoint>()
            .unwrap_err();
            assert_eq!(err.kind, crate::BackendErrorKind::Internal);
            assert!(err.message.contains("panicked: boom"), "{}", err.message);
            // Compute names arrive in both forms: the string of a 1.0–1.2
            // host and the typed form of a 1.3 one.
            for raw in [
                &br#"{"op":"ensure_running","name":"shop@dev"}"#[..],
                &br#"{"op":"ensure_running","name":{"database":"shop","branch":"dev"}}"#[..],
            ] {
                let mut out = RawBuffer::empty();
                call(instance, raw.as_ptr(), raw.len(), &mut out);
                let response: Response =
                    serde_json::from_slice(std::slice::from_raw_parts(out.ptr, out.len)).unwrap();
                free_buffer(out);
                let err = response.into_result::<ComputeEndpoint>().unwrap_err();
                assert_eq!(err.kind, crate::BackendErrorKind::NotFound);
                assert_eq!(err.message, "shop@dev");
            }
            // Defaults of the trait answer for what Toy does not implement.
            let err = roundtrip(
                instance,
                &Request::ListSnapshots {
                    database: "x".into(),
                },
            )
            .into_result::<Vec<crate::SnapshotInfo>>()
            .unwrap_err();
            assert_eq!(err.kind, crate::BackendErrorKind::Unsupported);
            assert_eq!(err.message, "backend toy cannot list snapshots");
            // Garbage instead of a request is an error, not a crash.
            let mut out = RawBuffer::empty();
            call(instance, b"not json".as_ptr(), 8, &mut out);
            let response: Response =
                serde_json::from_slice(std::slice::from_raw_parts(out.ptr, out.len)).unwrap();
            free_buffer(out);
            assert!(response.into_result::<()>().is_err());
            destroy(instance);
        }
    }

    #[test]
    fn a_failing_constructor_reports_why() {
        unsafe {
            let mut out = RawBuffer::empty();
            let config = b"{\"bad\": true}";
            let instance = create(config.as_ptr(), config.len(), &mut out, "test", |_| {
                Err(BackendError::new(
                    crate::BackendErrorKind::InvalidRequest,
                    "missing url",
                ))
            });
            assert!(instance.is_null());
            let response: Response =
                serde_json::from_slice(std::slice::from_raw_parts(out.ptr, out.len)).unwrap();
            free_buffer(out);
            assert_eq!(
                response.into_result::<()>().unwrap_err().message,
                "missing url"
            );
        }
    }
}
