//! Compute names: which branch of which database a compute serves.
//!
//! A branch's compute is written `database@branch`, and `main` — the
//! database itself — is written as the plain database name. This module is
//! the one place that text form is parsed ([`ComputeName::parse`]) and the
//! one place it is written (`Display`); everything else passes the typed
//! [`ComputeName`]. Across the ABI (1.3 and later) it travels as
//! `{"database": .., "branch": ..}`; [`ComputeName`] also deserializes
//! from the old string form, which 1.0–1.2 plugins and hosts send.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The branch that is the database itself.
pub const MAIN_BRANCH: &str = "main";

/// Which branch of which database a compute serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ComputeName {
    /// The database.
    pub database: String,
    /// The branch ([`MAIN_BRANCH`] for the database itself).
    pub branch: String,
}

impl ComputeName {
    /// The compute of `branch` of `database`.
    pub fn new(database: impl Into<String>, branch: impl Into<String>) -> Self {
        ComputeName {
            database: database.into(),
            branch: branch.into(),
        }
    }

    /// The compute of a database's `main` branch.
    pub fn main(database: impl Into<String>) -> Self {
        Self::new(database, MAIN_BRANCH)
    }

    /// Reads `db` (its `main` branch) or `db@branch`. Never fails: the
    /// database is everything before the first `@`, the branch everything
    /// after it, as given (`a@b@c` is branch `b@c` of `a`, `a@` the empty
    /// branch of `a`, which no backend has); names are checked where they
    /// are made, not here.
    pub fn parse(name: &str) -> Self {
        match name.split_once('@') {
            Some((database, branch)) => Self::new(database, branch),
            None => Self::main(name),
        }
    }

    /// Whether this is the database itself (its `main` branch).
    pub fn is_main(&self) -> bool {
        self.branch == MAIN_BRANCH
    }
}

impl fmt::Display for ComputeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_main() {
            f.write_str(&self.database)
        } else {
            write!(f, "{}@{}", self.database, self.branch)
        }
    }
}

impl From<&str> for ComputeName {
    fn from(name: &str) -> Self {
        ComputeName::parse(name)
    }
}

impl<'de> Deserialize<'de> for ComputeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Both wire forms: the typed one (ABI 1.3) and the string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Typed { database: String, branch: String },
            Text(String),
        }
        Ok(match Wire::deserialize(deserializer)? {
            Wire::Typed { database, branch } => ComputeName { database, branch },
            Wire::Text(text) => ComputeName::parse(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in ["shop", "shop@dev", "a@b@c", "a@", "@dev", ""] {
            assert_eq!(ComputeName::parse(text).to_string(), text, "{text}");
        }
        assert_eq!(ComputeName::parse("shop"), ComputeName::main("shop"));
        assert!(ComputeName::parse("shop").is_main());
        assert_eq!(ComputeName::parse("a@b@c"), ComputeName::new("a", "b@c"));
        assert_eq!(ComputeName::parse("a@"), ComputeName::new("a", ""));
        assert!(!ComputeName::parse("a@").is_main());
        // `db@main` is the database itself, written without the branch.
        assert!(ComputeName::parse("shop@main").is_main());
        assert_eq!(ComputeName::parse("shop@main").to_string(), "shop");
        assert_eq!(ComputeName::new("shop", "dev").to_string(), "shop@dev");
    }

    #[test]
    fn both_wire_forms_deserialize() {
        let typed: ComputeName =
            serde_json::from_str(r#"{"database":"shop","branch":"dev"}"#).unwrap();
        let text: ComputeName = serde_json::from_str(r#""shop@dev""#).unwrap();
        assert_eq!(typed, text);
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            serde_json::json!({"database": "shop", "branch": "dev"})
        );
        let main: ComputeName = serde_json::from_str(r#""shop""#).unwrap();
        assert_eq!(main, ComputeName::main("shop"));
        assert!(serde_json::from_str::<ComputeName>("42").is_err());
    }
}
