//! Errors as clients and API callers see them, and the one table from an
//! error's kind to its SQLSTATE, HTTP status and API code. Each error
//! carries a client-safe message that says what to do; causes are kept as
//! `#[source]` and logged where the error is handled, never sent out.
//!
//! - [`ClientError`]: what a Postgres client is sent (an ErrorResponse).
//! - [`ControlError`]: what a control-plane operation (create a database,
//!   branch, token…) fails with, for the API, CLI, console and loops.
//!   Gateway-made refusals are their own variants; a backend's error is
//!   wrapped whole; a catalog failure keeps its cause.

use crate::names::NameError;
use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use std::fmt::Display;

/// SQLSTATE of a compute that cannot be reached or started (the client may
/// retry).
pub const CANNOT_CONNECT_NOW: &str = "57P03";

/// A file or directory the gateway could not use: what it was doing,
/// where, and the OS's reason.
#[derive(Debug, thiserror::Error)]
#[error("could not {action} {}", path.display())]
pub struct FileError {
    /// read, write, create, remove, parse.
    pub action: &'static str,
    /// Which file or directory.
    pub path: std::path::PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// `map_err(file("read", &path))?`: an io error as a [`FileError`], which
/// `?` turns into any error made from one.
pub fn file<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::report::chain;

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
    pub fn catalog_unreadable(e: &dyn Display, what: &str) -> Self {
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

/// A control-plane operation's failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is malformed or breaks a rule (bad name, bad TTL…).
    #[error("{0}")]
    Invalid(String),
    /// A name the caller gave does not fit.
    #[error(transparent)]
    Name(#[from] NameError),
    /// What it names does not exist (or is not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// What it would make exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The backend cannot do this (by its declared capabilities).
    #[error("{0}")]
    Unsupported(String),
    /// Not possible right now (a backend not loaded, clients that stay busy).
    #[error("{0}")]
    Unavailable(String),
    /// The backend failed; its message is client-safe, its cause logged.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// The catalog could not be read or written.
    #[error("the gateway could not use its catalog ({0}); see its log")]
    Catalog(#[from] crate::catalog::CatalogError),
    /// Something inside the gateway failed (signing a token, …).
    #[error("{message}")]
    Internal {
        /// Client-safe text.
        message: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ControlError {
    /// The kind, for the status table.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            ControlError::Invalid(_) | ControlError::Name(_) => BackendErrorKind::InvalidRequest,
            ControlError::NotFound(_) => BackendErrorKind::NotFound,
            ControlError::AlreadyExists(_) => BackendErrorKind::AlreadyExists,
            ControlError::Unsupported(_) => BackendErrorKind::Unsupported,
            ControlError::Unavailable(_) => BackendErrorKind::Unavailable,
            ControlError::Backend(e) => e.kind,
            ControlError::Catalog(_) | ControlError::Internal { .. } => BackendErrorKind::Internal,
        }
    }
    /// HTTP status.
    pub fn status(&self) -> u16 {
        http_status(self.kind())
    }
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        api_code(self.kind())
    }
    /// A database that does not exist (or that the caller may not see).
    pub fn no_database(name: &str) -> Self {
        ControlError::NotFound(format!(
            "database \"{name}\" does not exist; see `ogel db list`"
        ))
    }
    /// A branch that does not exist.
    pub fn no_branch(database: &str, branch: &str) -> Self {
        ControlError::NotFound(format!(
            "database \"{database}\" has no branch \"{branch}\"; see `ogel branch list {database}`"
        ))
    }
    /// The cause worth logging, if any.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Backend(e) => std::error::Error::source(e),
            ControlError::Catalog(e) => Some(e),
            ControlError::Internal { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<&ControlError> for ClientError {
    fn from(e: &ControlError) -> Self {
        ClientError::new(sqlstate(e.kind()), e.to_string())
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
