//! The Neon API v2 client: one request with Bearer auth, retries (429 and
//! 5xx with exponential backoff honouring `Retry-After`, an unreachable API,
//! all within `retry_budget`), waiting out 423 Locked while a project's
//! operations run (within `operation_timeout`), polling operations until
//! they finish, and turning Neon's answers into [`ApiError`]s. The API key
//! is sent in the `Authorization` header and nowhere else.

use crate::config::{Secret, Settings, API_KEY_ENV};
use ogel_plugin_sdk::{BackendError, BackendErrorKind};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// What went wrong talking to Neon.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the key is wrong.
    #[error("the Neon API refused the API key (HTTP 401: {0}); set a valid key as `api_key` in [backends.neon] or in {API_KEY_ENV}")]
    Unauthorized(String),
    /// 403.
    #[error("the Neon API key may not do this (HTTP 403: {0}); check the key's permissions (`api_key` in [backends.neon])")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// Another 4xx: Neon refused the request as such.
    #[error("the Neon API refused the request (HTTP {status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Neon's message.
        message: String,
    },
    /// 429 for longer than the retry budget.
    #[error("the Neon API rate limited every request for {secs} s (HTTP 429); try again later, or raise retry_budget_secs in [backends.neon]")]
    RateLimited {
        /// Seconds spent retrying.
        secs: u64,
    },
    /// 5xx for longer than the retry budget.
    #[error("the Neon API is failing (HTTP {status}: {message}) and kept failing for {secs} s; try again later")]
    ServerError {
        /// The last status.
        status: u16,
        /// Neon's message.
        message: String,
        /// Seconds spent retrying.
        secs: u64,
    },
    /// No HTTP answer at all.
    #[error("the Neon API at {url} cannot be reached ({reason}); tried for {secs} s")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why (connection refused, timeout, …).
        reason: String,
        /// Seconds spent retrying.
        secs: u64,
    },
    /// 423 for longer than the operation timeout.
    #[error("Neon project {project} stayed locked by running operations (HTTP 423) for {secs} s; try again later")]
    Locked {
        /// The project.
        project: String,
        /// Seconds waited.
        secs: u64,
    },
    /// An operation ended `failed`/`error`/`cancelled`.
    #[error("Neon operation {action} ({id}) {status}: {error}")]
    OperationFailed {
        /// Operation id.
        id: String,
        /// Its action (`create_timeline`, `start_compute`, …).
        action: String,
        /// Its final status.
        status: String,
        /// Neon's error.
        error: String,
    },
    /// An operation did not end in time.
    #[error("Neon operation {action} ({id}) was still {status} after {secs} s")]
    OperationTimeout {
        /// Operation id.
        id: String,
        /// Its action.
        action: String,
        /// Its last status.
        status: String,
        /// Seconds waited.
        secs: u64,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from the Neon API: {0}")]
    Protocol(String),
}

impl ApiError {
    /// Whether the request may have had an effect we did not see (so what
    /// it would have made must be looked for and cleaned up).
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            ApiError::ServerError { .. } | ApiError::Unreachable { .. } | ApiError::Protocol(_)
        )
    }

    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::NotFound(_))
    }

    /// The SDK error kind it maps to.
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => BackendErrorKind::Internal,
            ApiError::NotFound(_) => BackendErrorKind::NotFound,
            ApiError::Conflict(_) => BackendErrorKind::AlreadyExists,
            ApiError::Refused { status, .. } if *status == 402 => BackendErrorKind::OutOfResources,
            ApiError::Refused { .. } => BackendErrorKind::InvalidRequest,
            ApiError::RateLimited { .. }
            | ApiError::ServerError { .. }
            | ApiError::Unreachable { .. }
            | ApiError::Locked { .. }
            | ApiError::OperationTimeout { .. } => BackendErrorKind::Unavailable,
            ApiError::OperationFailed { .. } | ApiError::Protocol(_) => BackendErrorKind::Internal,
        }
    }

    /// As a backend error whose message starts with `context`.
    pub fn context(self, context: &str) -> BackendError {
        BackendError::new(self.kind(), format!("{context}: {self}"))
    }
}

impl From<ApiError> for BackendError {
    fn from(e: ApiError) -> BackendError {
        BackendError::new(e.kind(), e.to_string())
    }
}

/// The Neon API, as configured.
pub struct NeonApi {
    client: reqwest::Client,
    base: String,
    key: Secret,
    retry_budget: Duration,
    operation_timeout: Duration,
}

/// The first and the longest backoff between retries.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Neon's error message out of an error body (`{"code", "message"}`).
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.chars().take(300).collect())
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The project id in a `/projects/{id}/...` path, for messages.
fn project_of(path: &str) -> String {
    path.strip_prefix("/projects/")
        .and_then(|rest| rest.split(['/', '?']).next())
        .unwrap_or("?")
        .to_string()
}

impl NeonApi {
    /// A client for the configured API (no request is made).
    pub fn new(settings: &Settings) -> Result<NeonApi, BackendError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(settings.request_timeout))
            .timeout(settings.request_timeout)
            .user_agent(concat!("ogel-backend-neon/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                BackendError::internal("could not set up the HTTP client for the Neon API")
                    .with_source(e)
            })?;
        Ok(NeonApi {
            client,
            base: settings.api_url.clone(),
            key: settings.api_key.clone(),
            retry_budget: settings.retry_budget,
            operation_timeout: settings.operation_timeout,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, None).await
    }

    /// One API call, with the retries described in the module doc.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let start = Instant::now();
        let retry_deadline = start + self.retry_budget;
        let lock_deadline = start + self.operation_timeout;
        let mut backoff = BACKOFF_START;
        let mut lock_wait = Duration::from_millis(200);
        loop {
            let mut request = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(self.key.expose())
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let (status, headers, text) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let headers = response.headers().clone();
                    match response.text().await {
                        Ok(text) => (status, headers, text),
                        Err(e) => {
                            if Instant::now() + backoff < retry_deadline {
                                tracing::warn!(%method, path, error = %e, "Neon API answer cut short; retrying");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(BACKOFF_MAX);
                                continue;
                            }
                            return Err(ApiError::Unreachable {
                                url: self.base.clone(),
                                reason: format!("the answer was cut short: {e}"),
                                secs: start.elapsed().as_secs(),
                            });
                        }
                    }
                }
                Err(e) => {
                    if Instant::now() + backoff < retry_deadline {
                        tracing::warn!(%method, path, error = %e, "Neon API unreachable; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    let reason = if e.is_timeout() {
                        "timed out".to_string()
                    } else if e.is_connect() {
                        "connection failed".to_string()
                    } else {
                        "request failed".to_string()
                    };
                    tracing::warn!(%method, path, error = %e, "Neon API unreachable; giving up");
                    return Err(ApiError::Unreachable {
                        url: self.base.clone(),
                        reason,
                        secs: start.elapsed().as_secs(),
                    });
                }
            };
            tracing::debug!(%method, path, status = status.as_u16(), "Neon API call");
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&text).map_err(|e| {
                    ApiError::Protocol(format!("{method} {path}: the body is not JSON ({e})"))
                });
            }
            let message = error_message(&text);
            match status {
                StatusCode::LOCKED => {
                    if Instant::now() + lock_wait < lock_deadline {
                        tracing::debug!(%method, path, "Neon project locked by running operations; waiting");
                        tokio::time::sleep(lock_wait).await;
                        lock_wait = (lock_wait * 3 / 2).min(Duration::from_secs(2));
                        continue;
                    }
                    return Err(ApiError::Locked {
                        project: project_of(path),
                        secs: start.elapsed().as_secs(),
                    });
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after(&headers).unwrap_or(backoff).max(backoff);
                    if Instant::now() + wait < retry_deadline {
                        tracing::warn!(%method, path, "Neon API rate limit (429); retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    tracing::warn!(%method, path, "Neon API rate limit (429); giving up");
                    return Err(ApiError::RateLimited {
                        secs: start.elapsed().as_secs().max(1),
                    });
                }
                s if s.is_server_error() => {
                    let wait = retry_after(&headers).unwrap_or(backoff).max(backoff);
                    if Instant::now() + wait < retry_deadline {
                        tracing::warn!(%method, path, status = s.as_u16(), %message, "Neon API server error; retrying in {wait:?}");
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                    return Err(ApiError::ServerError {
                        status: s.as_u16(),
                        message,
                        secs: start.elapsed().as_secs(),
                    });
                }
                StatusCode::UNAUTHORIZED => return Err(ApiError::Unauthorized(message)),
                StatusCode::FORBIDDEN => return Err(ApiError::Forbidden(message)),
                StatusCode::NOT_FOUND => return Err(ApiError::NotFound(message)),
                StatusCode::CONFLICT => return Err(ApiError::Conflict(message)),
                s => {
                    return Err(ApiError::Refused {
                        status: s.as_u16(),
                        message,
                    })
                }
            }
        }
    }

    /// Waits until every operation in `response["operations"]` has ended;
    /// the first that did not finish is the error.
    pub async fn wait_operations(
        &self,
        project_id: &str,
        response: &Value,
    ) -> Result<(), ApiError> {
        let ids: Vec<String> = response["operations"]
            .as_array()
            .map(|ops| {
                ops.iter()
                    .filter_map(|op| op["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            self.wait_operation(project_id, &id).await?;
        }
        Ok(())
    }

    /// Polls one operation until it ends.
    pub async fn wait_operation(&self, project_id: &str, id: &str) -> Result<(), ApiError> {
        let start = Instant::now();
        let mut interval = Duration::from_millis(100);
        loop {
            let body = self
                .get(&format!("/projects/{project_id}/operations/{id}"))
                .await?;
            let op = &body["operation"];
            let status = op["status"].as_str().unwrap_or_default().to_string();
            let action = op["action"].as_str().unwrap_or("operation").to_string();
            match status.as_str() {
                "finished" | "skipped" => return Ok(()),
                "failed" | "error" | "cancelled" => {
                    return Err(ApiError::OperationFailed {
                        id: id.to_string(),
                        action,
                        error: op["error"]
                            .as_str()
                            .filter(|e| !e.is_empty())
                            .unwrap_or("no reason given")
                            .to_string(),
                        status,
                    })
                }
                "scheduling" | "running" | "cancelling" => {}
                other => {
                    return Err(ApiError::Protocol(format!(
                        "operation {id} has an unknown status {other:?}"
                    )))
                }
            }
            if start.elapsed() + interval > self.operation_timeout {
                return Err(ApiError::OperationTimeout {
                    id: id.to_string(),
                    action,
                    status,
                    secs: start.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_kinds() {
        assert_eq!(error_message(r#"{"code":"","message":"nope"}"#), "nope");
        assert_eq!(error_message("plain"), "plain");
        assert_eq!(project_of("/projects/abc-1/branches"), "abc-1");
        let e = ApiError::Unauthorized("bad".into());
        assert!(e.to_string().contains("api_key"));
        assert_eq!(
            ApiError::RateLimited { secs: 3 }.kind(),
            BackendErrorKind::Unavailable
        );
        assert!(ApiError::RateLimited { secs: 3 }
            .to_string()
            .contains("rate limited"));
    }
}
