//! Names every stage agrees on, and nothing else: what a database, branch
//! or tenant may be called, the console's reserved names, how a branch's
//! compute is named (`database@branch`, `main` = the database itself), and
//! the clock records are stamped with (the kit's). A leaf: it imports no
//! other module of the gateway.

pub use ogel_plugin_kit::time::{unix_now, unix_secs};
pub use ogel_plugin_sdk::ComputeName;

/// The branch every database has: the database itself.
pub const MAIN_BRANCH: &str = "main";

/// The admin console's user name.
pub const ADMIN_USER: &str = "ogel";

/// A name a client or caller gave that cannot be used; the message says
/// what a good one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Characters or length.
    #[error("invalid {what} name \"{name}\": use 1–48 characters {allowed}")]
    Invalid {
        /// database, branch or tenant.
        what: &'static str,
        /// As given.
        name: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// Taken by Postgres or the gateway itself.
    #[error("\"{0}\" is reserved; choose another name")]
    Reserved(String),
}

/// Whether `name` is the admin console rather than a database.
pub fn is_admin_database(name: &str) -> bool {
    matches!(name, "ogel" | "pgbouncer")
}

fn checked(
    name: &str,
    what: &'static str,
    allowed: &'static str,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    let ok = name.chars().next().is_some_and(first) && name.chars().all(rest) && name.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            name: name.to_string(),
            allowed,
        })
    }
}

/// Database names clients can type in every driver without quoting.
pub fn validate_database(name: &str) -> Result<(), NameError> {
    checked(
        name,
        "database",
        "a-z, 0-9 and _, starting with a letter",
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
    )?;
    if matches!(name, "postgres" | "template0" | "template1") || is_admin_database(name) {
        return Err(NameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// Branch names: like database names, plus `-`, and may start with a digit.
pub fn validate_branch(name: &str) -> Result<(), NameError> {
    checked(
        name,
        "branch",
        "a-z, 0-9, _ and -, starting with a letter or digit",
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
    )
}

/// Tenant names: like database names, plus `-`; `default` is reserved.
pub fn validate_tenant(name: &str, default_tenant: &str) -> Result<(), NameError> {
    checked(
        name,
        "tenant",
        "a-z, 0-9, _ and -, starting with a letter",
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
    )?;
    if name == default_tenant {
        return Err(NameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// The compute name of a branch: `database` for `main`, else
/// `database@branch` (the text form of [`ComputeName`]).
pub fn compute_name(database: &str, branch: &str) -> String {
    ComputeName::new(database, branch).to_string()
}

/// A compute name (`shop@dev`, or `shop` for its `main`) as the typed name
/// backends take ([`ComputeName::parse`], the one parser).
pub fn split_compute(name: &str) -> ComputeName {
    ComputeName::parse(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_checked() {
        for ok in ["app", "shop", "a1", "my_db"] {
            assert!(validate_database(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "Shop",
            "a-b",
            "a b",
            "postgres",
            "template1",
            "ogel",
            "pgbouncer",
            &"x".repeat(49),
            "é",
        ] {
            assert!(validate_database(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branch_and_tenant_names_are_checked() {
        assert!(validate_branch("pr-42").is_ok());
        assert!(validate_branch("42").is_ok());
        assert!(validate_branch("Dev").is_err());
        assert!(validate_branch("a@b").is_err());
        assert!(validate_branch("").is_err());
        assert!(validate_tenant("acme-1", "default").is_ok());
        assert!(validate_tenant("default", "default").is_err());
        assert!(validate_tenant("1acme", "default").is_err());
    }

    #[test]
    fn compute_names_round_trip() {
        assert_eq!(compute_name("shop", "main"), "shop");
        assert_eq!(compute_name("shop", "dev"), "shop@dev");
        assert_eq!(split_compute("shop@dev"), ComputeName::new("shop", "dev"));
        assert_eq!(split_compute("shop"), ComputeName::new("shop", "main"));
    }
}
