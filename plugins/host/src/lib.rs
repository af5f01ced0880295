//! The gateway's side of the plugin ABI (`ogel_plugin_sdk::abi`): loading
//! plugin libraries, refusing the ones that are not plugins or speak
//! another ABI, and exposing each instance as a [`Backend`].
//!
//! Calls into a plugin block, so they run on tokio's blocking pool, never
//! on the gateway's async workers, and each is bounded by a timeout: a call
//! that hangs fails with `Unavailable` (its blocking thread stays with the
//! plugin until it returns). A call that panics inside the plugin is caught
//! there and fails that call only.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use ogel_plugin_sdk::abi::{self, EntryFn, PluginDescriptor, RawBuffer};
use ogel_plugin_sdk::wire::{
    Request, Response, BACKUPS_MINOR, REMOTE_STANDBY_MINOR, STANDBY_MINOR,
};
use ogel_plugin_sdk::{
    ArchiveStatus, Backend, BackendError, BackupInfo, BranchSpec, Capabilities, ComputeEndpoint,
    ComputeName, ComputeStatus, DatabaseSpec, Progress, RestoreSpec, Restored, SnapshotInfo, Tier,
};

/// The least time a call that copies data may take ([`Request::is_long`]).
const LONG_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);
use std::ffi::{c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why a library was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed (not a shared library, missing dependency, wrong architecture).
    #[error("not a loadable library: {0}")]
    NotALibrary(String),
    /// No entry symbol: a shared library, but not an OgelBase plugin.
    #[error("not an OgelBase plugin: no `{}` symbol", abi::ENTRY_SYMBOL)]
    NotAPlugin,
    /// The entry returned something that is not a descriptor.
    #[error("not an OgelBase plugin: its descriptor has the wrong magic number")]
    BadDescriptor,
    /// Another ABI major version.
    #[error("plugin ABI {found_major}.{found_minor} is incompatible with this gateway's ABI {}.{}; rebuild the plugin against ogel-plugin-sdk with ABI {}.x", abi::ABI_MAJOR, abi::ABI_MINOR, abi::ABI_MAJOR)]
    AbiMismatch {
        /// Major found.
        found_major: u32,
        /// Minor found.
        found_minor: u32,
    },
    /// Built for another target triple.
    #[error("plugin was built for {found} (by {rustc}); this gateway runs on {expected}; rebuild it for {expected}")]
    TargetMismatch {
        /// Target found.
        found: String,
        /// Its compiler.
        rustc: String,
        /// Our target.
        expected: String,
    },
}

/// A loaded plugin library. Never unloaded: instances and threads of the
/// plugin may outlive any one user.
pub struct Plugin {
    /// Backend name the plugin registers (e.g. `native`).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// ABI (major, minor).
    pub abi: (u32, u32),
    /// SDK version the plugin was built with.
    pub sdk_version: String,
    /// Compiler the plugin was built with.
    pub rustc_version: String,
    /// The library file.
    pub file: PathBuf,
    descriptor: &'static PluginDescriptor,
    /// Never dropped, so never unloaded: plugin threads (its runtime's
    /// workers, a hung call) may outlive every instance.
    _library: std::mem::ManuallyDrop<libloading::Library>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("file", &self.file)
            .finish()
    }
}

/// Reads a C string field of a descriptor.
///
/// # Safety
/// `ptr` must be null or a NUL-terminated string valid for the library's life.
unsafe fn c_string(ptr: *const std::ffi::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
}

/// Loads one library file.
pub fn load(path: &Path) -> Result<Plugin, LoadError> {
    // SAFETY: loading a library runs its initialisers; plugins_dir is
    // trusted configuration, as any dlopen'd code must be.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| LoadError::NotALibrary(e.to_string()))?;
    // SAFETY: the symbol's type is the ABI's; checked by magic below.
    let entry: EntryFn = unsafe {
        *library
            .get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes())
            .map_err(|_| LoadError::NotAPlugin)?
    };
    // SAFETY: calling the plugin's entry; it returns a pointer to static data.
    let descriptor = unsafe { entry() };
    if descriptor.is_null() {
        return Err(LoadError::BadDescriptor);
    }
    // SAFETY: magic, abi_major and abi_minor keep their offsets in every ABI
    // version; nothing else is read before they are checked.
    let (magic, major, minor) = unsafe {
        let d = descriptor as *const u64;
        let magic = std::ptr::read_unaligned(d);
        let versions = d.add(1) as *const u32;
        (
            magic,
            std::ptr::read_unaligned(versions),
            std::ptr::read_unaligned(versions.add(1)),
        )
    };
    if magic != abi::DESCRIPTOR_MAGIC {
        return Err(LoadError::BadDescriptor);
    }
    if major != abi::ABI_MAJOR {
        return Err(LoadError::AbiMismatch {
            found_major: major,
            found_minor: minor,
        });
    }
    // SAFETY: same major: the layout is ours; the library stays loaded.
    let descriptor: &'static PluginDescriptor = unsafe { &*descriptor };
    let (target, rustc) = unsafe {
        (
            c_string(descriptor.target),
            c_string(descriptor.rustc_version),
        )
    };
    let expected = abi::TARGET.trim_end_matches('\0').to_string();
    if target != expected {
        return Err(LoadError::TargetMismatch {
            found: target,
            rustc,
            expected,
        });
    }
    // SAFETY: C strings from the descriptor, static in the library.
    let plugin = unsafe {
        Plugin {
            name: c_string(descriptor.plugin_name),
            version: c_string(descriptor.plugin_version),
            abi: (major, minor),
            sdk_version: c_string(descriptor.sdk_version),
            rustc_version: rustc,
            file: path.to_path_buf(),
            descriptor,
            _library: std::mem::ManuallyDrop::new(library),
        }
    };
    Ok(plugin)
}

/// Loads every `*.so` in `dir` (sorted by name). Returns the plugins and,
/// for each refused file, why; one bad file never stops the others.
pub fn load_dir(dir: &Path) -> (Vec<Plugin>, Vec<(PathBuf, LoadError)>) {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "so"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut plugins = Vec::new();
    let mut refused = Vec::new();
    for file in files {
        match load(&file) {
            Ok(p) => plugins.push(p),
            Err(e) => refused.push((file, e)),
        }
    }
    (plugins, refused)
}

/// A pointer to a plugin instance; the plugin's `call` is thread-safe.
#[derive(Clone, Copy)]
struct InstancePtr(*mut c_void);
// SAFETY: the ABI requires `call` to accept concurrent calls on one instance.
unsafe impl Send for InstancePtr {}
unsafe impl Sync for InstancePtr {}

impl InstancePtr {
    /// The raw pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut c_void {
        self.0
    }
}

/// One instance of a plugin, as a [`Backend`].
pub struct PluginBackend {
    plugin: Arc<Plugin>,
    instance: InstancePtr,
    capabilities: Capabilities,
    description: String,
    call_timeout: Duration,
    /// Calls still running inside the plugin (some may have timed out here).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Plugin {
    /// Creates an instance with its JSON configuration; every call is
    /// bounded by `call_timeout`.
    pub async fn instantiate(
        self: &Arc<Self>,
        config: serde_json::Value,
        call_timeout: Duration,
    ) -> Result<PluginBackend, BackendError> {
        let plugin = self.clone();
        let bytes =
            serde_json::to_vec(&config).map_err(|e| BackendError::internal(e.to_string()))?;
        let created = tokio::time::timeout(
            call_timeout,
            tokio::task::spawn_blocking(move || {
                let mut out = RawBuffer::empty();
                // SAFETY: ABI call with a valid config buffer and out pointer.
                let instance =
                    unsafe { (plugin.descriptor.create)(bytes.as_ptr(), bytes.len(), &mut out) };
                let response = plugin.take_response(out);
                (InstancePtr(instance), response)
            }),
        )
        .await
        .map_err(|_| {
            BackendError::unavailable(format!(
                "plugin {} did not start within {call_timeout:?}",
                self.name
            ))
        })?
        .map_err(|e| {
            BackendError::internal(format!("plugin {} start task failed: {e}", self.name))
        })?;
        let (instance, response) = created;
        if instance.0.is_null() {
            let error = match response {
                Some(r) => r.into_result::<()>().err(),
                None => None,
            };
            return Err(error.unwrap_or_else(|| {
                BackendError::internal(format!("plugin {} failed to start", self.name))
            }));
        }
        let mut backend = PluginBackend {
            plugin: self.clone(),
            instance,
            capabilities: Capabilities::default(),
            description: self.name.clone(),
            call_timeout,
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        backend.capabilities = backend.call(Request::Capabilities).await?;
        backend.description = backend.call(Request::Describe).await?;
        Ok(backend)
    }

    /// Decodes and frees a response buffer.
    fn take_response(&self, out: RawBuffer) -> Option<Response> {
        if out.ptr.is_null() {
            return None;
        }
        // SAFETY: the plugin wrote `len` bytes at `ptr`; we copy them out
        // before giving the buffer back to the plugin's allocator.
        let bytes = unsafe { std::slice::from_raw_parts(out.ptr, out.len) }.to_vec();
        // SAFETY: returning the plugin's own buffer to it, once.
        unsafe { (self.descriptor.free_buffer)(out) };
        serde_json::from_slice(&bytes).ok()
    }
}

impl PluginBackend {
    /// The library behind this backend.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Refuses a call older plugins do not know, as the SDK's default
    /// method would.
    fn require_minor(&self, minor: u32, what: &str) -> Result<(), BackendError> {
        if self.plugin.abi.1 < minor {
            return Err(BackendError::unsupported(format!(
                "backend {} cannot {what} (its plugin is built for ABI 1.{}; 1.{minor} is needed)",
                self.plugin.name, self.plugin.abi.1
            )));
        }
        Ok(())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<T, BackendError> {
        let limit = if request.is_long() {
            self.call_timeout.max(LONG_CALL_TIMEOUT)
        } else {
            self.call_timeout
        };
        // Each plugin gets the forms of its own ABI minor (string compute
        // names before 1.3).
        let bytes = request
            .encode_for(self.plugin.abi.1)
            .map_err(|e| BackendError::internal(e.to_string()))?;
        let plugin = self.plugin.clone();
        let instance = self.instance;
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let task = tokio::task::spawn_blocking(move || {
            let mut out = RawBuffer::empty();
            // SAFETY: a live instance of this plugin (not destroyed while
            // calls are in flight), a valid request buffer.
            unsafe {
                (plugin.descriptor.call)(instance.get(), bytes.as_ptr(), bytes.len(), &mut out)
            };
            in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            plugin.take_response(out)
        });
        let response = tokio::time::timeout(limit, task)
            .await
            .map_err(|_| {
                tracing::error!(plugin = %self.plugin.name, "plugin call timed out");
                BackendError::unavailable(format!(
                    "backend {} did not answer within {limit:?}",
                    self.plugin.name
                ))
            })?
            .map_err(|e| {
                BackendError::internal(format!("backend {} call failed: {e}", self.plugin.name))
            })?;
        response
            .ok_or_else(|| {
                BackendError::internal(format!("backend {} sent no valid answer", self.plugin.name))
            })?
            .into_result()
    }
}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        // A call that timed out may still be running inside the plugin:
        // then the instance is leaked rather than freed under it.
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            // SAFETY: our instance, destroyed once, with no call running.
            unsafe { (self.plugin.descriptor.destroy)(self.instance.0) };
        }
    }
}

#[async_trait::async_trait]
impl Backend for PluginBackend {
    fn name(&self) -> &str {
        &self.plugin.name
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
    async fn create_database(&self, spec: &DatabaseSpec) -> Result<(), BackendError> {
        self.call(Request::CreateDatabase { spec: spec.clone() })
            .await
    }
    async fn delete_database(&self, name: &str) -> Result<(), BackendError> {
        self.call(Request::DeleteDatabase { name: name.into() })
            .await
    }
    async fn ensure_running(&self, name: &ComputeName) -> Result<ComputeEndpoint, BackendError> {
        self.call(Request::EnsureRunning { name: name.clone() })
            .await
    }
    async fn suspend(&self, name: &ComputeName) -> Result<(), BackendError> {
        self.call(Request::Suspend { name: name.clone() }).await
    }
    async fn compute_status(&self, name: &ComputeName) -> Result<ComputeStatus, BackendError> {
        self.call(Request::ComputeStatus { name: name.clone() })
            .await
    }
    async fn health(&self) -> Result<(), BackendError> {
        self.call(Request::Health).await
    }
    async fn list_databases(&self) -> Result<Vec<String>, BackendError> {
        self.call(Request::ListDatabases).await
    }
    async fn create_branch(&self, spec: &BranchSpec) -> Result<(), BackendError> {
        self.call(Request::CreateBranch { spec: spec.clone() })
            .await
    }
    async fn delete_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        self.call(Request::DeleteBranch {
            database: database.into(),
            branch: branch.into(),
        })
        .await
    }
    async fn reset_branch(&self, database: &str, branch: &str) -> Result<(), BackendError> {
        self.call(Request::ResetBranch {
            database: database.into(),
            branch: branch.into(),
        })
        .await
    }
    async fn create_snapshot(
        &self,
        database: &str,
        branch: &str,
    ) -> Result<SnapshotInfo, BackendError> {
        self.call(Request::CreateSnapshot {
            database: database.into(),
            branch: branch.into(),
        })
        .await
    }
    async fn list_snapshots(&self, database: &str) -> Result<Vec<SnapshotInfo>, BackendError> {
        self.call(Request::ListSnapshots {
            database: database.into(),
        })
        .await
    }
    async fn restore_snapshot(
        &self,
        database: &str,
        snapshot: &str,
        as_branch: &str,
    ) -> Result<(), BackendError> {
        self.call(Request::RestoreSnapshot {
            database: database.into(),
            snapshot: snapshot.into(),
            as_branch: as_branch.into(),
        })
        .await
    }
    async fn create_backup(
        &self,
        database: &str,
        branch: &str,
        full: bool,
    ) -> Result<BackupInfo, BackendError> {
        self.require_minor(BACKUPS_MINOR, "make backups")?;
        self.call(Request::CreateBackup {
            database: database.into(),
            branch: branch.into(),
            full,
        })
        .await
    }
    async fn list_backups(&self, database: &str) -> Result<Vec<BackupInfo>, BackendError> {
        self.require_minor(BACKUPS_MINOR, "list backups")?;
        self.call(Request::ListBackups {
            database: database.into(),
        })
        .await
    }
    async fn restore_backup(&self, spec: &RestoreSpec) -> Result<Restored, BackendError> {
        self.require_minor(BACKUPS_MINOR, "restore backups")?;
        self.call(Request::RestoreBackup { spec: spec.clone() })
            .await
    }
    async fn archive_status(
        &self,
        name: &ComputeName,
    ) -> Result<Option<ArchiveStatus>, BackendError> {
        if self.plugin.abi.1 < BACKUPS_MINOR {
            return Ok(None);
        }
        self.call(Request::ArchiveStatus { name: name.clone() })
            .await
    }
    async fn tier(&self, name: &ComputeName) -> Result<Option<Tier>, BackendError> {
        if self.plugin.abi.1 < BACKUPS_MINOR {
            return Ok(None);
        }
        self.call(Request::Tier { name: name.clone() }).await
    }
    async fn set_tier(&self, name: &ComputeName, tier: Tier) -> Result<(), BackendError> {
        self.require_minor(BACKUPS_MINOR, "move data between tiers")?;
        self.call(Request::SetTier {
            name: name.clone(),
            tier,
        })
        .await
    }
    async fn set_standbys(
        &self,
        name: &ComputeName,
        count: u32,
        synchronous: bool,
    ) -> Result<(), BackendError> {
        self.require_minor(STANDBY_MINOR, "keep standbys")?;
        self.call(Request::SetStandbys {
            name: name.clone(),
            count,
            synchronous,
        })
        .await
    }
    async fn standby_status(
        &self,
        name: &ComputeName,
    ) -> Result<Option<ogel_plugin_sdk::StandbyStatus>, BackendError> {
        if self.plugin.abi.1 < STANDBY_MINOR {
            return Ok(None);
        }
        self.call(Request::StandbyStatus { name: name.clone() })
            .await
    }
    async fn promote(
        &self,
        name: &ComputeName,
        why: ogel_plugin_sdk::Takeover,
    ) -> Result<ComputeEndpoint, BackendError> {
        self.require_minor(STANDBY_MINOR, "promote a standby")?;
        self.call(Request::Promote {
            name: name.clone(),
            why,
        })
        .await
    }
    async fn replicate(
        &self,
        name: &ComputeName,
        role: ogel_plugin_sdk::ReplicaRole,
    ) -> Result<(), BackendError> {
        self.require_minor(REMOTE_STANDBY_MINOR, "keep a standby on another gateway")?;
        self.call(Request::Replicate {
            name: name.clone(),
            role,
        })
        .await
    }
    async fn progress(&self, name: &ComputeName) -> Result<Option<Progress>, BackendError> {
        // A 1.0 plugin does not know the request: no progress to report.
        if self.plugin.abi.1 < 1 {
            return Ok(None);
        }
        self.call(Request::Progress { name: name.clone() }).await
    }
}
