//! The Neon API v2 resources the emulator keeps (projects, branches,
//! endpoints, roles, databases, operations) in the JSON shapes of Neon's
//! published OpenAPI spec, plus id, password and timestamp generation.

use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// The current time as Neon writes it (`2022-11-23T17:42:25Z`).
pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A time `secs` seconds from now, as Neon writes it.
pub(crate) fn in_seconds(secs: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(secs)).to_string()
}

/// Milliseconds since the Unix epoch (the kit's clock).
pub(crate) fn unix_ms() -> u64 {
    ogel_plugin_kit::time::unix_millis()
}

const ADJECTIVES: &[&str] = &[
    "aged",
    "ancient",
    "autumn",
    "billowing",
    "bitter",
    "black",
    "blue",
    "bold",
    "broad",
    "broken",
    "calm",
    "cold",
    "cool",
    "crimson",
    "curly",
    "damp",
    "dark",
    "dawn",
    "delicate",
    "divine",
    "dry",
    "empty",
    "falling",
    "fancy",
    "flat",
    "floral",
    "fragrant",
    "frosty",
    "gentle",
    "green",
    "hidden",
    "holy",
    "icy",
    "jolly",
    "late",
    "lingering",
    "little",
    "lively",
    "long",
    "lucky",
    "misty",
    "morning",
    "muddy",
    "mute",
    "nameless",
    "noisy",
    "odd",
    "old",
    "orange",
    "patient",
    "plain",
    "polished",
    "proud",
    "purple",
    "quiet",
    "rapid",
    "raspy",
    "red",
    "restless",
    "rough",
    "round",
    "royal",
    "shiny",
    "shrill",
    "shy",
    "silent",
    "small",
    "snowy",
    "soft",
    "solitary",
    "sparkling",
    "spring",
    "square",
    "steep",
    "still",
    "summer",
    "super",
    "sweet",
    "throbbing",
    "tight",
    "tiny",
    "twilight",
    "wandering",
    "weathered",
    "white",
    "wild",
    "winter",
    "wispy",
    "withered",
    "yellow",
    "young",
];

const NOUNS: &[&str] = &[
    "art",
    "band",
    "bar",
    "base",
    "bird",
    "block",
    "boat",
    "bonus",
    "bread",
    "breeze",
    "brook",
    "bush",
    "butterfly",
    "cake",
    "cell",
    "cherry",
    "cloud",
    "credit",
    "darkness",
    "dawn",
    "dew",
    "disk",
    "dream",
    "dust",
    "feather",
    "field",
    "fire",
    "firefly",
    "flower",
    "fog",
    "forest",
    "frog",
    "frost",
    "glade",
    "glitter",
    "grass",
    "hall",
    "hat",
    "haze",
    "heart",
    "hill",
    "king",
    "lab",
    "lake",
    "leaf",
    "limit",
    "math",
    "meadow",
    "mode",
    "moon",
    "morning",
    "mountain",
    "mouse",
    "mud",
    "night",
    "paper",
    "pine",
    "poetry",
    "pond",
    "queen",
    "rain",
    "recipe",
    "resonance",
    "rice",
    "river",
    "salad",
    "scene",
    "sea",
    "shadow",
    "shape",
    "silence",
    "sky",
    "smoke",
    "snow",
    "snowflake",
    "sound",
    "star",
    "sun",
    "sunset",
    "surf",
    "term",
    "thunder",
    "tooth",
    "tree",
    "truth",
    "union",
    "unit",
    "violet",
    "voice",
    "water",
    "waterfall",
    "wave",
    "wildflower",
    "wind",
    "wood",
];

/// A Neon-style id: `[prefix-]adjective-noun-12345678`.
pub(crate) fn generate_id(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let adjective = ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.gen_range(0..NOUNS.len())];
    let number: u32 = rng.gen_range(10_000_000..100_000_000);
    if prefix.is_empty() {
        format!("{adjective}-{noun}-{number}")
    } else {
        format!("{prefix}-{adjective}-{noun}-{number}")
    }
}

/// A random UUID (version 4), the form of operation ids.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::thread_rng().gen();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A role password in Neon's current form (`npg_` and 12 letters and digits).
pub(crate) fn generate_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..12)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect();
    format!("npg_{tail}")
}

/// A project (`Project` in the spec).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Project {
    pub id: String,
    pub platform_id: String,
    pub region_id: String,
    pub name: String,
    pub provisioner: String,
    pub default_endpoint_settings: Value,
    pub settings: Value,
    pub pg_version: u32,
    pub proxy_host: String,
    pub branch_logical_size_limit: i64,
    pub branch_logical_size_limit_bytes: i64,
    pub store_passwords: bool,
    pub cpu_used_sec: i64,
    pub active_time_seconds: i64,
    pub compute_time_seconds: i64,
    pub written_data_bytes: i64,
    pub data_transfer_bytes: i64,
    pub data_storage_bytes_hour: i64,
    pub creation_source: String,
    pub history_retention_seconds: i64,
    pub created_at: String,
    pub updated_at: String,
    pub consumption_period_start: String,
    pub consumption_period_end: String,
    pub owner_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute_last_active_at: Option<String>,
}

impl Project {
    /// The `ProjectListItem` form: the project plus `active_time`.
    pub(crate) fn list_item(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("active_time".into(), Value::from(self.active_time_seconds));
        }
        value
    }
}

/// A branch (`Branch` in the spec).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Branch {
    pub id: String,
    pub project_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_timestamp: Option<String>,
    pub name: String,
    /// `init` while its create operation runs, then `ready`.
    pub current_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_state: Option<String>,
    pub state_changed_at: String,
    pub logical_size: i64,
    pub creation_source: String,
    pub primary: bool,
    pub default: bool,
    pub protected: bool,
    pub cpu_used_sec: i64,
    pub compute_time_seconds: i64,
    pub active_time_seconds: i64,
    pub written_data_bytes: i64,
    pub data_transfer_bytes: i64,
    pub created_at: String,
    pub updated_at: String,
    pub init_source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The native backend's branch name of this branch's cluster.
    #[serde(skip)]
    pub native_branch: String,
}

/// A compute endpoint (`Endpoint` in the spec).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Endpoint {
    pub host: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub project_id: String,
    pub branch_id: String,
    pub autoscaling_limit_min_cu: f64,
    pub autoscaling_limit_max_cu: f64,
    pub region_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `init`, `active` or `idle`: what the compute is, following the operations.
    pub current_state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_state: Option<String>,
    pub settings: Value,
    pub pooler_enabled: bool,
    pub pooler_mode: String,
    pub disabled: bool,
    pub passwordless_access: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
    pub creation_source: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<String>,
    pub proxy_host: String,
    pub suspend_timeout_seconds: i64,
    pub provisioner: String,
}

/// A role of a branch (`Role` in the spec); `password` is shown only where
/// Neon shows it (create, reset, the project's first role).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Role {
    pub branch_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub protected: bool,
    pub authentication_method: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Role {
    /// The role as listed (no password).
    pub(crate) fn public(&self) -> Role {
        Role {
            password: None,
            ..self.clone()
        }
    }
}

/// A database of a branch (`Database` in the spec).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Database {
    pub id: i64,
    pub branch_id: String,
    pub name: String,
    pub owner_name: String,
    pub created_at: String,
    pub updated_at: String,
}

/// An operation (`Operation` in the spec).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Operation {
    pub id: String,
    pub project_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    pub action: String,
    /// `scheduling` → `running` → `finished`, or `failed` / `cancelled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub failures_count: i32,
    pub created_at: String,
    pub updated_at: String,
    pub total_duration_ms: i64,
    /// When it started running, for `total_duration_ms`.
    #[serde(skip)]
    pub started_ms: u64,
}

impl Operation {
    /// A new operation in `scheduling`.
    pub(crate) fn new(
        project_id: &str,
        branch_id: Option<&str>,
        endpoint_id: Option<&str>,
        action: &str,
    ) -> Operation {
        let now = now();
        Operation {
            id: uuid_v4(),
            project_id: project_id.to_string(),
            branch_id: branch_id.map(str::to_string),
            endpoint_id: endpoint_id.map(str::to_string),
            action: action.to_string(),
            status: "scheduling".to_string(),
            error: None,
            failures_count: 0,
            created_at: now.clone(),
            updated_at: now,
            total_duration_ms: 0,
            started_ms: 0,
        }
    }

    /// Whether the operation still holds its project's lock.
    pub(crate) fn in_progress(&self) -> bool {
        matches!(self.status.as_str(), "scheduling" | "running")
    }
}

/// Everything the emulator knows about one project.
#[derive(Debug)]
pub(crate) struct ProjectState {
    pub project: Project,
    pub branches: Vec<Branch>,
    pub endpoints: Vec<Endpoint>,
    pub roles: Vec<Role>,
    pub databases: Vec<Database>,
    pub operations: Vec<Operation>,
}

impl ProjectState {
    pub(crate) fn branch(&self, id: &str) -> Option<&Branch> {
        self.branches.iter().find(|b| b.id == id)
    }
    pub(crate) fn branch_mut(&mut self, id: &str) -> Option<&mut Branch> {
        self.branches.iter_mut().find(|b| b.id == id)
    }
    pub(crate) fn default_branch(&self) -> Option<&Branch> {
        self.branches.iter().find(|b| b.default)
    }
    pub(crate) fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.id == id)
    }
    pub(crate) fn endpoint_mut(&mut self, id: &str) -> Option<&mut Endpoint> {
        self.endpoints.iter_mut().find(|e| e.id == id)
    }
    pub(crate) fn operation_mut(&mut self, id: &str) -> Option<&mut Operation> {
        self.operations.iter_mut().find(|o| o.id == id)
    }
    pub(crate) fn role(&self, branch_id: &str, name: &str) -> Option<&Role> {
        self.roles
            .iter()
            .find(|r| r.branch_id == branch_id && r.name == name)
    }
    pub(crate) fn database(&self, branch_id: &str, name: &str) -> Option<&Database> {
        self.databases
            .iter()
            .find(|d| d.branch_id == branch_id && d.name == name)
    }
    /// Whether an operation of the project is scheduled or running.
    pub(crate) fn locked(&self) -> bool {
        self.operations.iter().any(Operation::in_progress)
    }
    /// The read-write endpoint of a branch.
    pub(crate) fn read_write_endpoint(&self, branch_id: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.branch_id == branch_id && e.kind == "read_write")
    }
    /// Whether any endpoint of the branch is active (its cluster must run).
    pub(crate) fn branch_active(&self, branch_id: &str) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.branch_id == branch_id && e.current_state == "active")
    }
}
