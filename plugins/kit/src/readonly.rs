//! The read-only role, `ogel_readonly`, that read-only clients (token URLs
//! minted `--read-only`) log in as: it reads every table through
//! `pg_read_all_data`, owns nothing and cannot create databases or roles,
//! so the database refuses its writes whatever the session sets; its
//! transactions also default to read only. Its password is the backend's
//! to choose (derived, see [`crate::secrets`]); the SQL that makes it is
//! here, the same for every backend.

use crate::sql::{quote_ident, quote_literal};
use ogel_plugin_sdk::Credentials;

/// The role's name, in every compute.
pub const ROLE: &str = "ogel_readonly";

/// One batch (for `batch_execute`, outside a transaction block is not
/// needed) that makes the role if it is missing and (re)sets its password
/// to `password` (sent as a SCRAM-SHA-256 verifier, never in clear) and
/// its grants. Runs as a superuser, or as a role with `CREATEROLE` that is
/// a member of `pg_read_all_data` with admin option (a managed service's
/// owner role). Idempotent.
pub fn setup_sql(password: &str) -> String {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let role = quote_ident(ROLE);
    let name = quote_literal(ROLE);
    let verifier = quote_literal(&verifier);
    format!(
        "DO $ogel$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN \
         CREATE ROLE {role} LOGIN; END IF; END$ogel$; \
         ALTER ROLE {role} LOGIN NOCREATEDB NOCREATEROLE PASSWORD {verifier}; \
         GRANT pg_read_all_data TO {role}; \
         ALTER ROLE {role} SET default_transaction_read_only = on"
    )
}

/// How the gateway logs in as the role (`ComputeEndpoint.read_only`).
pub fn credentials(password: impl Into<String>) -> Credentials {
    Credentials::Password {
        user: ROLE.to_string(),
        password: password.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_makes_the_role_and_never_holds_the_password() {
        let sql = setup_sql("s3cret'pw");
        assert!(!sql.contains("s3cret"), "{sql}");
        assert!(sql.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "{sql}");
        assert!(sql.contains("CREATE ROLE \"ogel_readonly\" LOGIN"), "{sql}");
        assert!(
            sql.contains("GRANT pg_read_all_data TO \"ogel_readonly\""),
            "{sql}"
        );
        assert!(sql.contains("default_transaction_read_only = on"), "{sql}");
        assert!(sql.contains("rolname = 'ogel_readonly'"), "{sql}");
    }

    #[test]
    fn credentials_name_the_role() {
        let Credentials::Password { user, password } = credentials("pw");
        assert_eq!((user.as_str(), password.as_str()), (ROLE, "pw"));
    }
}
