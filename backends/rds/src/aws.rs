//! The AWS side: building the RDS client from the standard configuration
//! chain (plus the section's `region`, `profile`, `endpoint_url`), and
//! turning the SDK's errors into [`BackendError`]s that say what to check.
//!
//! Throttling and network errors are retried by the SDK's standard retry
//! strategy (exponential backoff with jitter, `max_attempts` attempts); what
//! still fails after that is reported here. Messages never carry
//! credentials: AWS's own text is included only for errors that cannot
//! echo a signature or key (not for authentication failures).

use crate::config::RdsConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_rds::config::http::HttpResponse;
use aws_sdk_rds::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use std::time::Duration;

/// Builds the client (no request is sent yet).
pub async fn client(config: &RdsConfig) -> Result<aws_sdk_rds::Client, BackendError> {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(config.max_attempts)
                .with_initial_backoff(Duration::from_millis(500)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        );
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let shared = loader.load().await;
    if shared.region().is_none() {
        return Err(BackendError::new(
            BackendErrorKind::InvalidRequest,
            "no AWS region: set `region` in [backends.rds], or AWS_REGION, or a region in the AWS profile",
        ));
    }
    Ok(aws_sdk_rds::Client::new(&shared))
}

/// Error codes meaning AWS did not accept the credentials.
const AUTH_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];

const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
];

const THROTTLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "PriorRequestNotComplete",
];

const QUOTA_CODES: &[&str] = &[
    "InstanceQuotaExceeded",
    "StorageQuotaExceeded",
    "SnapshotQuotaExceeded",
    "InsufficientDBInstanceCapacity",
    "InsufficientStorageClusterCapacity",
];

/// The error code of an SDK error, if AWS answered with one.
pub fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// AWS's message of a service error ("" for any other error). Only for
/// errors that cannot echo a signature or key (state and parameter
/// errors), as [`error`] does.
pub fn message<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> &str {
    match e {
        SdkError::ServiceError(s) => s.err().message().unwrap_or(""),
        _ => "",
    }
}

/// Maps a failed call `what` (e.g. "describe RDS instance ogel-shop-…") to
/// a backend error.
pub fn error<E>(what: &str, e: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&e).to_string();
    let (kind, message) = match &e {
        SdkError::ServiceError(s) => {
            // An error body the SDK cannot parse still has its HTTP status:
            // 403 is AWS refusing the request's credentials or rights.
            let code = match (s.err().code(), s.raw().status().as_u16()) {
                (Some(code), _) => code,
                (None, 403) => "HTTP 403 (Forbidden)",
                (None, _) => "unknown",
            };
            let aws_message = s.err().message().unwrap_or("");
            if AUTH_CODES.contains(&code) || code.starts_with("HTTP 403") {
                (
                    BackendErrorKind::Internal,
                    format!(
                        "AWS refused the plugin's credentials ({code}) when trying to {what}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the `profile` / AWS_PROFILE in use), that a session token has not expired, and that `region` is the instances' region"
                    ),
                )
            } else if ACCESS_CODES.contains(&code) {
                (
                    BackendErrorKind::Internal,
                    format!(
                        "AWS denied the plugin's credentials the right to {what} ({code}): grant the rds:* actions listed in the RDS backend's docs to its IAM identity"
                    ),
                )
            } else if THROTTLE_CODES.contains(&code) {
                (
                    BackendErrorKind::Unavailable,
                    format!(
                        "AWS is throttling RDS API calls ({code}) and still was after retries with backoff, when trying to {what}; try again in a minute"
                    ),
                )
            } else if QUOTA_CODES.contains(&code) {
                (
                    BackendErrorKind::OutOfResources,
                    format!("RDS refused to {what}: {code}: {aws_message}"),
                )
            } else if code.ends_with("NotFound") || code.ends_with("NotFoundFault") {
                (
                    BackendErrorKind::NotFound,
                    format!("RDS could not {what}: {code}: {aws_message}"),
                )
            } else if code.ends_with("AlreadyExists") || code.ends_with("AlreadyExistsFault") {
                (
                    BackendErrorKind::AlreadyExists,
                    format!("RDS could not {what}: {code}: {aws_message}"),
                )
            } else {
                (
                    BackendErrorKind::Internal,
                    format!("RDS refused to {what}: {code}: {aws_message}"),
                )
            }
        }
        SdkError::TimeoutError(_) => (
            BackendErrorKind::Unavailable,
            format!("the RDS API did not answer in time when trying to {what}; check the network path to it (and `endpoint_url`)"),
        ),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            if detail.contains("credential") {
                (BackendErrorKind::Internal, credentials_missing(what))
            } else {
                (
                    BackendErrorKind::Unavailable,
                    format!(
                        "could not reach the RDS API to {what}: {}; check the network path to it (and `endpoint_url`)",
                        first_cause(&detail)
                    ),
                )
            }
        }
        _ => {
            if detail.contains("credential") {
                (BackendErrorKind::Internal, credentials_missing(what))
            } else {
                (
                    BackendErrorKind::Internal,
                    format!("could not {what}: {}", first_cause(&detail)),
                )
            }
        }
    };
    BackendError::new(kind, message).with_source(Detail(detail))
}

fn credentials_missing(what: &str) -> String {
    format!(
        "no usable AWS credentials to {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `profile` / AWS_PROFILE, or run with an IAM role"
    )
}

/// The innermost cause of the SDK's error chain, which is the useful part
/// ("Connection refused (os error 111)").
fn first_cause(detail: &str) -> &str {
    detail
        .rsplit(": ")
        .next()
        .map(|s| s.trim_end_matches(')').trim_start_matches('('))
        .filter(|s| !s.is_empty())
        .unwrap_or(detail)
}

/// The SDK's error rendered as text, kept as the logged source.
#[derive(Debug)]
struct Detail(String);

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Detail {}
