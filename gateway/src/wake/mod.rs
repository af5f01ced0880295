//! The backends this gateway serves: every plugin library found is loaded
//! through the same loader (`ogel-plugin-host`) — the native backend
//! included — instantiated with its configuration section, and wrapped in
//! its own [`Lifecycle`]. Libraries that are not plugins or speak another
//! ABI are refused with one line each; the gateway runs with the others.

use ogel_plugin_host::{load, Plugin};
use ogel_plugin_sdk::Capabilities;
use ogel_policies::Lifecycle;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A loaded plugin, for `ogel plugins list`.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    /// Backend name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// ABI `major.minor`.
    pub abi: String,
    /// The library.
    pub file: PathBuf,
    /// What it can do (when instantiated).
    pub capabilities: Option<Capabilities>,
    /// Its description, or why it could not start.
    pub status: String,
}

/// Every backend, by name.
pub struct Backends {
    lifecycles: BTreeMap<String, Arc<Lifecycle>>,
    /// Loaded plugins.
    pub plugins: Vec<PluginInfo>,
    /// Files refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

/// Where plugins are looked for: next to the `ogel` binary (only
/// `libogel_backend_*.so`, the backends built with it), then every `*.so`
/// in `plugins_dir`.
pub fn plugin_files(plugins_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        files.extend(so_files(&exe_dir).into_iter().filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libogel_backend_"))
        }));
    }
    files.extend(so_files(plugins_dir));
    files
}

fn so_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "so"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

impl Backends {
    /// Loads `files` and instantiates each plugin with `configs[name]`
    /// (an empty object when absent).
    pub async fn load(
        files: &[PathBuf],
        configs: &BTreeMap<String, serde_json::Value>,
        call_timeout: Duration,
        wake_timeout: Duration,
        restore_timeout: Duration,
    ) -> Backends {
        let mut backends = Backends {
            lifecycles: BTreeMap::new(),
            plugins: Vec::new(),
            refused: Vec::new(),
        };
        for file in files {
            let plugin = match load(file) {
                Ok(p) => Arc::new(p),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "plugin refused: {e}");
                    backends.refused.push((file.clone(), e.to_string()));
                    continue;
                }
            };
            if backends.lifecycles.contains_key(&plugin.name) {
                let reason = format!(
                    "a backend named \"{}\" is already loaded; this copy is ignored",
                    plugin.name
                );
                tracing::warn!(file = %file.display(), "{reason}");
                backends.refused.push((file.clone(), reason));
                continue;
            }
            let section = configs.get(&plugin.name).cloned();
            let configured = section.is_some();
            let config = section.unwrap_or_else(|| serde_json::json!({}));
            let mut info = info_of(&plugin);
            match plugin.instantiate(config, call_timeout).await {
                Ok(backend) => {
                    use ogel_plugin_sdk::Backend;
                    info.capabilities = Some(backend.capabilities());
                    info.status = backend.describe();
                    tracing::info!(backend = %plugin.name, file = %file.display(), "{}", info.status);
                    backends.lifecycles.insert(
                        plugin.name.clone(),
                        Arc::new(
                            Lifecycle::new(Arc::new(backend), wake_timeout)
                                .with_restore_timeout(restore_timeout),
                        ),
                    );
                }
                // A backend nobody configured (Neon, RDS next to the binary)
                // is not a fault: it says what it needs, without a warning.
                Err(e) if !configured => {
                    tracing::debug!(backend = %plugin.name, "backend not configured: {e}");
                    info.status = format!(
                        "not configured, needs [backends.{}] in ogel.toml: {e}",
                        plugin.name
                    );
                }
                Err(e) => {
                    tracing::warn!(backend = %plugin.name, "backend could not start: {e}");
                    info.status = format!("not started: {e}");
                }
            }
            backends.plugins.push(info);
        }
        backends
    }

    /// The lifecycle of backend `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Lifecycle>> {
        self.lifecycles.get(name)
    }

    /// One line per running backend (versions, paths).
    pub fn description(&self) -> String {
        self.plugins
            .iter()
            .filter(|p| p.capabilities.is_some())
            .map(|p| p.status.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Names of the backends that are running.
    pub fn names(&self) -> Vec<String> {
        self.lifecycles.keys().cloned().collect()
    }
}

fn info_of(plugin: &Plugin) -> PluginInfo {
    PluginInfo {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        abi: format!("{}.{}", plugin.abi.0, plugin.abi.1),
        file: plugin.file.clone(),
        capabilities: None,
        status: String::new(),
    }
}
