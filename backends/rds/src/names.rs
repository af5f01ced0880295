//! Names: OgelBase database and branch names, compute names
//! (`database@branch`), and the RDS identifiers and tags they map to.
//!
//! RDS identifiers allow only letters, digits and single hyphens, start with
//! a letter and end with no hyphen (63 characters for instances, 255 for
//! snapshots), while OgelBase names may hold `_` (databases) and `-`
//! (branches). So an identifier is a readable part (`_` → `-`, cut to fit)
//! and a hash of the exact names, which keeps it unique and deterministic:
//! `ogel-shop-1f2e3d4c` for `shop`, `ogel-shop-dev-9a8b7c6d` for `shop@dev`.
//! The exact names are in the instance's tags (see [`TAG_DATABASE`] …).

use crate::config::invalid;
pub use ogel_plugin_kit::sql::{quote_ident, quote_literal};
use ogel_plugin_sdk::{BackendError, ComputeName};
use sha2::{Digest, Sha256};

/// Tag: the OgelBase database an instance or snapshot belongs to.
pub const TAG_DATABASE: &str = "ogel:database";
/// Tag: the branch an instance serves, or a snapshot was taken of.
pub const TAG_BRANCH: &str = "ogel:branch";
/// Tag: the database's owner role inside the instance.
pub const TAG_OWNER: &str = "ogel:owner";
/// Tag: the name of the database inside the instance (or snapshot).
pub const TAG_DBNAME: &str = "ogel:dbname";
/// Tag: the identifier prefix of the gateway that made it.
pub const TAG_PREFIX: &str = "ogel:prefix";
/// Tag: the compute's generation, raised by every promote (see
/// `standby.rs`).
pub const TAG_GENERATION: &str = "ogel:generation";
/// Tag: how many times a standby took over the compute.
pub const TAG_FAILOVERS: &str = "ogel:failovers";

/// Database names: `[a-z_][a-z0-9_]*`, at most 63 bytes (the SDK's rule).
pub fn check_database(name: &str) -> Result<(), BackendError> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid database name \"{name}\": use lower-case letters, digits and _, at most 63 bytes"
        )))
    }
}

/// Role names: as database names.
pub fn check_role(name: &str) -> Result<(), BackendError> {
    check_database(name).map_err(|_| {
        invalid(format!(
            "invalid role name \"{name}\": use lower-case letters, digits and _, at most 63 bytes"
        ))
    })
}

/// Branch names: 1–48 of `[a-z0-9_-]`, starting with a letter or digit (the gateway's rule).
pub fn check_branch(name: &str) -> Result<(), BackendError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid branch name \"{name}\": use 1–48 characters a-z, 0-9, _ and -, starting with a letter or digit"
        )))
    }
}

/// Checks a compute name's database and branch and returns them.
pub fn check_compute(name: &ComputeName) -> Result<(&str, &str), BackendError> {
    let (db, branch) = (name.database.as_str(), name.branch.as_str());
    check_database(db)?;
    check_branch(branch)?;
    Ok((db, branch))
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `s` with `_` → `-`, runs of `-` collapsed, no `-` at either end.
fn readable(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c == '_' { '-' } else { c };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The instance identifier of `database`'s branch `branch` (at most 63).
pub fn instance_id(prefix: &str, database: &str, branch: &str) -> String {
    let hash = short_hash(&[prefix, database, branch]);
    let mut middle = readable(database);
    if branch != "main" {
        middle.push('-');
        middle.push_str(&readable(branch));
    }
    // prefix + '-' + middle + '-' + 8 hex ≤ 63
    let room = 63usize.saturating_sub(prefix.len() + 2 + hash.len());
    let mut middle: String = middle.chars().take(room).collect();
    while middle.ends_with('-') {
        middle.pop();
    }
    if middle.is_empty() {
        format!("{prefix}-{hash}")
    } else {
        format!("{prefix}-{middle}-{hash}")
    }
}

/// A fresh identifier for a restore that must not collide with the
/// instance it replaces: the instance's identifier cut to fit, `-r` and
/// the time in milliseconds.
pub fn replacement_id(instance: &str, millis: u128) -> String {
    let suffix = format!("-r{millis}");
    let mut base: String = instance.chars().take(63 - suffix.len()).collect();
    while base.ends_with('-') {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// The identifier of Aurora Replica `n` of cluster `cluster`: the
/// cluster's identifier cut to fit, `-reader` and `n` (at most 63).
pub fn reader_id(cluster: &str, n: u32) -> String {
    let suffix = format!("-reader{n}");
    let mut base: String = cluster
        .chars()
        .take(63usize.saturating_sub(suffix.len()))
        .collect();
    while base.ends_with('-') {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// A new snapshot's identifier: the instance's, `-s` and the time in milliseconds.
pub fn snapshot_id(instance: &str, millis: u128) -> String {
    format!("{instance}-s{millis}")
}

/// Whether `id` is a valid RDS identifier of at most `max` characters.
pub fn valid_rds_identifier(id: &str, max: usize) -> bool {
    !id.is_empty()
        && id.len() <= max
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_valid_unique_and_stable() {
        let a = instance_id("ogel", "conformance_db", "main");
        assert!(a.starts_with("ogel-conformance-db-"), "{a}");
        assert!(valid_rds_identifier(&a, 63), "{a}");
        assert_eq!(a, instance_id("ogel", "conformance_db", "main"));
        let b = instance_id("ogel", "conformance_db", "conformance-dev");
        assert!(valid_rds_identifier(&b, 63), "{b}");
        assert_ne!(a, b);
        // Same readable part, different names: different identifiers.
        assert_ne!(
            instance_id("ogel", "a_b", "main"),
            instance_id("ogel", "a", "b")
        );
        for (db, br) in [
            ("_x", "main"),
            ("x__", "1--2"),
            (&*"a".repeat(63), &*"b".repeat(48)),
            ("__", "_"),
        ] {
            let id = instance_id("ogel-test", db, br);
            assert!(valid_rds_identifier(&id, 63), "{id}");
            let r = replacement_id(&id, 1_764_000_000_000);
            assert!(valid_rds_identifier(&r, 63), "{r}");
            let s = snapshot_id(&id, 1_764_000_000_000);
            assert!(valid_rds_identifier(&s, 255), "{s}");
            for n in [1, 15] {
                let r = reader_id(&id, n);
                assert!(valid_rds_identifier(&r, 63), "{r}");
                assert_ne!(r, id);
                assert!(r.ends_with(&format!("-reader{n}")), "{r}");
            }
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_database("shop_1").is_ok());
        assert!(check_database("Shop").is_err());
        assert!(check_database("a\"b").is_err());
        assert!(check_branch("conformance-dev").is_ok());
        assert!(check_branch("-x").is_err());
        let dev = ComputeName::parse("shop@dev");
        assert_eq!(check_compute(&dev).unwrap(), ("shop", "dev"));
        let main = ComputeName::parse("shop");
        assert_eq!(check_compute(&main).unwrap(), ("shop", "main"));
        assert!(check_compute(&ComputeName::parse("shop@")).is_err());
        assert!(check_compute(&ComputeName::parse("shop@a@b")).is_err());
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
