//! Errors as clients and API callers see them. Each error knows its
//! SQLSTATE, its HTTP status and a client-safe message that says what to
//! do; causes are logged where the error is handled, never sent out.

use ogel_plugin_sdk::{BackendError, BackendErrorKind};

/// An error to send to a Postgres client as an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// SQLSTATE.
    pub code: &'static str,
    /// Primary message.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl ClientError {
    /// The catalog could not be read during a login (logged with `what`).
    pub fn catalog_unreadable(e: &crate::catalog::CatalogError, what: &str) -> Self {
        tracing::error!(error = %e, "catalog read failed during {what}");
        ClientError::new(
            "XX000",
            "the gateway could not read its catalog; see its log",
        )
    }

    /// An error with no hint.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ClientError {
            code,
            message: message.into(),
            hint: None,
        }
    }
    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// 08P01: the bytes broke the protocol.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new("08P01", message)
    }
    /// 3D000.
    pub fn unknown_database(db: &str) -> Self {
        Self::new("3D000", format!("database \"{db}\" does not exist"))
            .hint("list databases with `ogel db list`; create one with `ogel db create NAME`")
    }
    /// 28P01, the same for unknown users and wrong passwords.
    pub fn bad_password(user: &str) -> Self {
        Self::new(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        )
    }
}

/// SQLSTATE for a backend error kind.
pub fn sqlstate(kind: BackendErrorKind) -> &'static str {
    match kind {
        BackendErrorKind::NotFound => "3D000",
        BackendErrorKind::AlreadyExists => "42P04",
        BackendErrorKind::InvalidRequest => "22023",
        BackendErrorKind::Unsupported => "0A000",
        BackendErrorKind::Unavailable => "57P03",
        BackendErrorKind::OutOfResources => "53100",
        BackendErrorKind::Internal => "XX000",
    }
}

/// HTTP status for a backend error kind.
pub fn http_status(kind: BackendErrorKind) -> u16 {
    match kind {
        BackendErrorKind::NotFound => 404,
        BackendErrorKind::AlreadyExists => 409,
        BackendErrorKind::InvalidRequest => 400,
        BackendErrorKind::Unsupported => 422,
        BackendErrorKind::Unavailable => 503,
        BackendErrorKind::OutOfResources => 507,
        BackendErrorKind::Internal => 500,
    }
}

/// Stable machine-readable code for API errors.
pub fn api_code(kind: BackendErrorKind) -> &'static str {
    match kind {
        BackendErrorKind::NotFound => "not_found",
        BackendErrorKind::AlreadyExists => "already_exists",
        BackendErrorKind::InvalidRequest => "invalid_request",
        BackendErrorKind::Unsupported => "unsupported",
        BackendErrorKind::Unavailable => "unavailable",
        BackendErrorKind::OutOfResources => "out_of_resources",
        BackendErrorKind::Internal => "internal",
    }
}

impl From<&BackendError> for ClientError {
    fn from(e: &BackendError) -> Self {
        ClientError::new(sqlstate(e.kind), e.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_distinct_sqlstate_and_a_fitting_status() {
        use BackendErrorKind::*;
        let table = [
            (NotFound, "3D000", 404),
            (AlreadyExists, "42P04", 409),
            (InvalidRequest, "22023", 400),
            (Unsupported, "0A000", 422),
            (Unavailable, "57P03", 503),
            (OutOfResources, "53100", 507),
            (Internal, "XX000", 500),
        ];
        for (kind, code, status) in table {
            assert_eq!(sqlstate(kind), code);
            assert_eq!(http_status(kind), status);
        }
    }
}
