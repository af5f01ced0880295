//! The plugin's configuration: the `[backends.rds]` section of `ogel.toml`,
//! received as JSON, checked once at start (unknown keys refused) and kept
//! with its secret out of `Debug`.

use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// What a database is made of (`engine`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Engine {
    /// One RDS for PostgreSQL DB instance (engine `postgres`).
    #[default]
    #[serde(rename = "postgres")]
    Postgres,
    /// One Aurora PostgreSQL DB cluster with one writer instance (engine
    /// `aurora-postgresql`); branches are copy-on-write clones.
    #[serde(rename = "aurora-postgresql")]
    AuroraPostgres,
}

impl Engine {
    /// The RDS engine name.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::AuroraPostgres => "aurora-postgresql",
        }
    }
}

/// `[backends.rds]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsConfig {
    /// AWS region; unset: the standard chain (`AWS_REGION`, the profile).
    #[serde(default)]
    pub region: Option<String>,
    /// AWS profile name; unset: `AWS_PROFILE` or `default`.
    #[serde(default)]
    pub profile: Option<String>,
    /// RDS API endpoint instead of AWS's (moto, a VPC endpoint).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Key every password derives from (master and owners). Required.
    pub secret: String,
    /// `postgres` (default: one DB instance per database) or
    /// `aurora-postgresql` (one DB cluster and its writer instance).
    #[serde(default)]
    pub engine: Engine,
    /// Master user of every instance.
    #[serde(default = "default_master_username")]
    pub master_username: String,
    /// Database the master logs in to.
    #[serde(default = "default_master_database")]
    pub master_database: String,
    /// First part of every instance and snapshot identifier.
    #[serde(default = "default_prefix")]
    pub identifier_prefix: String,
    /// `DBInstanceClass` of new instances (of an Aurora cluster's writer);
    /// unset: `db.t4g.micro`, or `db.t4g.medium` for Aurora (its smallest).
    #[serde(default)]
    pub instance_class: Option<String>,
    /// `AllocatedStorage` of new instances, GiB (not used by Aurora,
    /// whose storage grows by itself).
    #[serde(default = "default_storage")]
    pub allocated_storage_gib: i32,
    /// `StorageType` (gp3, gp2, io1, …); unset: RDS's default.
    #[serde(default)]
    pub storage_type: Option<String>,
    /// `EngineVersion` (e.g. `16.4`); unset: RDS's default.
    #[serde(default)]
    pub engine_version: Option<String>,
    /// `DBSubnetGroupName`; unset: the default VPC.
    #[serde(default)]
    pub db_subnet_group_name: Option<String>,
    /// `VpcSecurityGroupIds`.
    #[serde(default)]
    pub vpc_security_group_ids: Vec<String>,
    /// `PubliclyAccessible`; unset: RDS's default for the subnet group.
    #[serde(default)]
    pub publicly_accessible: Option<bool>,
    /// `BackupRetentionPeriod` in days; unset: RDS's default.
    #[serde(default)]
    pub backup_retention_days: Option<i32>,
    /// Take a final snapshot when an instance is deleted (kept, not listed).
    #[serde(default)]
    pub final_snapshot: bool,
    /// Connect to instances with verified TLS (RDS's CA from `ca_file`).
    #[serde(default = "yes")]
    pub tls: bool,
    /// PEM bundle of the RDS certificate authorities (required with `tls`).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// RDS host name, or `*.suffix`, → `host:port` that reaches it.
    #[serde(default)]
    pub endpoint_overrides: BTreeMap<String, String>,
    /// Bound on waiting for a new or restored instance.
    #[serde(default = "default_create_timeout", with = "humantime_serde")]
    pub create_timeout: Duration,
    /// Bound on `ensure_running` waiting for a stopped instance to start;
    /// past it the caller gets `Unavailable` ("starting, retry").
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// How long `suspend` waits for `stopped` before returning (the stop
    /// goes on at RDS).
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Bound on waiting for a snapshot to become available.
    #[serde(default = "default_snapshot_timeout", with = "humantime_serde")]
    pub snapshot_timeout: Duration,
    /// Bound on waiting for a deleted instance to be gone.
    #[serde(default = "default_delete_timeout", with = "humantime_serde")]
    pub delete_timeout: Duration,
    /// Bound on `promote` waiting for RDS's failover (RebootDBInstance with
    /// ForceFailover, FailoverDBCluster) to end with the instance or
    /// cluster available again; past it the caller gets `Unavailable` and
    /// the failover goes on at RDS.
    #[serde(default = "default_failover_timeout", with = "humantime_serde")]
    pub failover_timeout: Duration,
    /// Time between two DescribeDB* polls while waiting.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Timeout of the master's connections to instances.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Attempts per AWS call (throttling and network errors are retried
    /// with exponential backoff).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Every instance endpoint reaches one shared Postgres server (the
    /// test data path, a single tunnel). See the crate docs.
    #[serde(default)]
    pub shared_data_server: bool,
}

fn yes() -> bool {
    true
}
fn default_master_username() -> String {
    "ogel_master".into()
}
fn default_master_database() -> String {
    "postgres".into()
}
fn default_prefix() -> String {
    "ogel".into()
}
fn default_storage() -> i32 {
    20
}
fn default_create_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_snapshot_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}
fn default_delete_timeout() -> Duration {
    Duration::from_secs(20 * 60)
}
fn default_failover_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    6
}

impl fmt::Debug for RdsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdsConfig")
            .field("region", &self.region)
            .field("profile", &self.profile)
            .field("endpoint_url", &self.endpoint_url)
            .field("secret", &"<redacted>")
            .field("master_username", &self.master_username)
            .field("identifier_prefix", &self.identifier_prefix)
            .field("engine", &self.engine)
            .field("instance_class", &self.instance_class)
            .field("allocated_storage_gib", &self.allocated_storage_gib)
            .field("tls", &self.tls)
            .field("endpoint_overrides", &self.endpoint_overrides)
            .field("shared_data_server", &self.shared_data_server)
            .finish_non_exhaustive()
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> BackendError {
    BackendError::new(BackendErrorKind::InvalidRequest, message)
}

impl RdsConfig {
    /// Whether databases are Aurora clusters.
    pub fn aurora(&self) -> bool {
        self.engine == Engine::AuroraPostgres
    }

    /// `DBInstanceClass` of new instances.
    pub fn instance_class(&self) -> &str {
        match (&self.instance_class, self.engine) {
            (Some(c), _) => c,
            (None, Engine::Postgres) => "db.t4g.micro",
            (None, Engine::AuroraPostgres) => "db.t4g.medium",
        }
    }

    /// Parses and checks the section.
    pub fn from_json(value: serde_json::Value) -> Result<RdsConfig, BackendError> {
        // serde's messages name the key, never a value.
        let config: RdsConfig = serde_json::from_value(value)
            .map_err(|e| invalid(format!("invalid [backends.rds] configuration: {e}")))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), BackendError> {
        let bad = |m: String| {
            Err(invalid(format!(
                "invalid [backends.rds] configuration: {m}"
            )))
        };
        if self.secret.len() < 16 {
            return bad("`secret` must be at least 16 characters (a long random string)".into());
        }
        if let Some(region) = &self.region {
            if !valid_region(region) {
                return bad(format!(
                    "`region` \"{region}\" is not an AWS region name (like us-east-1)"
                ));
            }
        }
        if let Some(url) = &self.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return bad("`endpoint_url` must start with http:// or https://".into());
            }
        }
        let prefix = &self.identifier_prefix;
        if prefix.is_empty()
            || prefix.len() > 20
            || !prefix.starts_with(|c: char| c.is_ascii_lowercase())
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            || prefix.ends_with('-')
            || prefix.contains("--")
        {
            return bad(
                "`identifier_prefix` must be 1–20 of a-z, 0-9 and single hyphens, starting with a letter"
                    .into(),
            );
        }
        let user = &self.master_username;
        if user.is_empty()
            || user.len() > 16
            || !user.starts_with(|c: char| c.is_ascii_alphabetic())
            || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(
                "`master_username` must be 1–16 letters, digits or _, starting with a letter (RDS's rule)"
                    .into(),
            );
        }
        if self.tls && self.ca_file.is_none() {
            return bad("`tls = true` needs `ca_file`, the RDS CA bundle (global-bundle.pem from AWS's RDS documentation); `tls = false` only for a tunnel or a test server".into());
        }
        if self.max_attempts == 0 {
            return bad("`max_attempts` must be at least 1".into());
        }
        if self.poll_interval.is_zero() {
            return bad("`poll_interval` must be more than 0".into());
        }
        for (pattern, target) in &self.endpoint_overrides {
            if pattern.is_empty() || (pattern.starts_with('*') && !pattern.starts_with("*.")) {
                return bad(format!(
                    "`endpoint_overrides` key \"{pattern}\": use a host name or *.suffix"
                ));
            }
            crate::endpoints::parse_host_port(target).map_err(|m| {
                invalid(format!(
                    "invalid [backends.rds] configuration: `endpoint_overrides` \"{pattern}\": {m}"
                ))
            })?;
        }
        Ok(())
    }
}

/// `xx-name-N` (us-east-1, ap-southeast-2, us-gov-west-1, eu-central-2).
fn valid_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Value {
        serde_json::json!({"secret": "0123456789abcdef-long", "tls": false})
    }

    #[test]
    fn defaults_and_checks() {
        let c = RdsConfig::from_json(base()).unwrap();
        assert_eq!(c.master_username, "ogel_master");
        assert_eq!(c.identifier_prefix, "ogel");
        assert_eq!(c.start_timeout, Duration::from_secs(60));
        assert_eq!(c.failover_timeout, Duration::from_secs(600));
        assert_eq!(c.engine, Engine::Postgres);
        assert_eq!(c.instance_class(), "db.t4g.micro");
        let mut v = base();
        v["engine"] = "aurora-postgresql".into();
        let c = RdsConfig::from_json(v).unwrap();
        assert!(c.aurora());
        assert_eq!(c.instance_class(), "db.t4g.medium");
        let mut v = base();
        v["engine"] = "mysql".into();
        let e = RdsConfig::from_json(v).unwrap_err();
        assert!(e.message.contains("aurora-postgresql"), "{}", e.message);
        let mut v = base();
        v["region"] = "nowhere".into();
        let e = RdsConfig::from_json(v).unwrap_err();
        assert!(e.message.contains("region"), "{}", e.message);
        let mut v = base();
        v["bogus"] = 1.into();
        assert!(RdsConfig::from_json(v).is_err());
        let mut v = base();
        v["tls"] = true.into();
        let e = RdsConfig::from_json(v).unwrap_err();
        assert!(e.message.contains("ca_file"), "{}", e.message);
        let mut v = base();
        v["poll_interval"] = "250ms".into();
        v["region"] = "us-gov-west-1".into();
        assert!(RdsConfig::from_json(v).is_ok());
    }

    #[test]
    fn secret_never_in_debug_or_errors() {
        let mut v = base();
        v["secret"] = "hunter2-hunter2-hunter2".into();
        let c = RdsConfig::from_json(v).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = RdsConfig::from_json(serde_json::json!({"secret": "hunter2"})).unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }
}
