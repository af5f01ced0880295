//! The plugin ABI: what crosses the boundary between the gateway and a
//! plugin library, and nothing else.
//!
//! Rust has no stable ABI, so only C types cross it: a `#[repr(C)]`
//! descriptor with four `extern "C"` functions, and byte buffers carrying
//! JSON messages ([`crate::wire`]). A plugin therefore does not need the
//! gateway's compiler version, allocator or tokio: it owns its runtime and
//! its memory, and frees what it allocated ([`PluginDescriptor::free_buffer`]).
//!
//! Versioning: the first three fields (`magic`, `abi_major`, `abi_minor`)
//! keep their offsets forever, so a loader can read them from any plugin
//! and refuse an unknown major before touching the rest. A minor bump only
//! adds message kinds or a field form the host only sends to plugins of
//! that minor or later (1.3's typed compute names); the major changes when
//! the descriptor or an existing message changes for every plugin.

use std::ffi::{c_char, c_void};

/// The symbol every plugin exports: `extern "C" fn() -> *const PluginDescriptor`.
pub const ENTRY_SYMBOL: &str = "ogel_plugin_entry";
/// Identifies an OgelBase descriptor ("OGELPLUG").
pub const DESCRIPTOR_MAGIC: u64 = 0x4f47_454c_504c_5547;
/// Incompatible changes bump this; the loader refuses other majors.
pub const ABI_MAJOR: u32 = 1;
/// Compatible additions bump this. 1.1: `progress`. 1.2: optional
/// `ComputeEndpoint.read_only` and `ComputeEndpoint.tls` (a 1.0/1.1 plugin
/// omits them: no read-only role, plaintext to its computes). 1.3: compute
/// names ([`crate::ComputeName`]) travel as `{"database", "branch"}`
/// instead of `db@branch` strings; the host sends 1.0–1.2 plugins the
/// string, and a plugin accepts both forms. 1.4: backups in a durable
/// store (`create_backup`, `list_backups`, `restore_backup`) and
/// `archive_status`; the host answers them itself for older plugins.
/// 1.5: standbys and failover (`set_standbys`, `standby_status`,
/// `promote`, `Capabilities.standby`); older plugins have no standby.
/// 1.6: standbys on another gateway of a cluster (`replicate`,
/// `Capabilities.remote_standby`); older plugins keep theirs local.
pub const ABI_MINOR: u32 = 6;
/// The SDK version, NUL-terminated.
pub const SDK_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
/// `rustc --version` of the build, NUL-terminated (informational: the ABI
/// does not depend on it).
pub const RUSTC_VERSION: &str = concat!(env!("OGEL_SDK_RUSTC_VERSION"), "\0");
/// Target triple of the build, NUL-terminated; must match the gateway's.
pub const TARGET: &str = concat!(env!("OGEL_SDK_TARGET"), "\0");

/// Bytes allocated by the plugin, handed to the gateway, and given back to
/// the plugin's `free_buffer`.
#[repr(C)]
#[derive(Debug)]
pub struct RawBuffer {
    /// Start of the bytes (null when empty).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
    /// Allocation capacity (the plugin's business).
    pub cap: usize,
}

impl RawBuffer {
    /// An empty buffer.
    pub const fn empty() -> Self {
        RawBuffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hands a vector over (the plugin side).
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        RawBuffer {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// Takes the vector back (the plugin side, in `free_buffer`).
    ///
    /// # Safety
    /// `self` must come from [`RawBuffer::from_vec`] in the same library.
    pub unsafe fn into_vec(self) -> Vec<u8> {
        if self.ptr.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(self.ptr, self.len, self.cap)
    }
}

/// Creates a backend instance from its JSON configuration. Returns null on
/// failure, with a JSON [`crate::wire::Response`] error in `out`.
pub type CreateFn =
    unsafe extern "C" fn(config: *const u8, config_len: usize, out: *mut RawBuffer) -> *mut c_void;
/// Performs one JSON [`crate::wire::Request`] and writes a JSON
/// [`crate::wire::Response`] to `out`. Blocks until done; callable from
/// several threads at once.
pub type CallFn = unsafe extern "C" fn(
    instance: *mut c_void,
    request: *const u8,
    request_len: usize,
    out: *mut RawBuffer,
);
/// Frees a buffer the plugin wrote.
pub type FreeBufferFn = unsafe extern "C" fn(buffer: RawBuffer);
/// Destroys an instance.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// What a plugin's entry symbol returns. Static for the library's lifetime.
#[repr(C)]
pub struct PluginDescriptor {
    /// [`DESCRIPTOR_MAGIC`].
    pub magic: u64,
    /// [`ABI_MAJOR`] of the SDK the plugin was built with.
    pub abi_major: u32,
    /// [`ABI_MINOR`] of the SDK the plugin was built with.
    pub abi_minor: u32,
    /// SDK version (C string).
    pub sdk_version: *const c_char,
    /// Compiler (C string).
    pub rustc_version: *const c_char,
    /// Target triple (C string).
    pub target: *const c_char,
    /// Plugin (backend) name, e.g. `native` (C string).
    pub plugin_name: *const c_char,
    /// Plugin version (C string).
    pub plugin_version: *const c_char,
    /// See [`CreateFn`].
    pub create: CreateFn,
    /// See [`CallFn`].
    pub call: CallFn,
    /// See [`FreeBufferFn`].
    pub free_buffer: FreeBufferFn,
    /// See [`DestroyFn`].
    pub destroy: DestroyFn,
}

// The descriptor is immutable static data: its pointers are to string
// literals and functions.
unsafe impl Sync for PluginDescriptor {}

/// The entry symbol's type.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;
