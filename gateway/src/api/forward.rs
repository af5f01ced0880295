//! An API call about a database another gateway of the cluster serves is
//! forwarded to that gateway's API (same method, path, query, body and
//! bearer token: every gateway accepts every gateway's admin token, and
//! tenants' tokens are in the shared catalog), and its answer returned as
//! it is. A database of a gateway that is down is a clear 503.

use super::{ApiError, ApiState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Largest request body forwarded.
const BODY_MAX: usize = 1 << 20;
/// How long the serving gateway may take to answer (restores and
/// branches of big databases take minutes).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);

/// The database a `/v1/databases/{name}/…` path is about, unless it is the
/// list or a create (those are this gateway's).
fn database_of(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next(), segments.next()) {
        (Some("v1"), Some("databases"), Some(name)) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// The middleware: forwards, or passes the request on.
pub(super) async fn to_serving_gateway(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(name) = database_of(request.uri().path()).map(str::to_string) else {
        return next.run(request).await;
    };
    let node = match state.databases.served_elsewhere(&name) {
        Ok(Some(node)) => node,
        Ok(None) => return next.run(request).await,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "database \"{name}\" is served by gateway {}, whose API at {} did not answer: {why}",
                node.name, node.api
            ),
        )
        .into_response()
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_MAX).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies are limited to {BODY_MAX} bytes"),
        )
        .into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let mut forwarded = reqwest::Client::new()
        .request(parts.method.clone(), format!("http://{}{path}", node.api))
        .timeout(ANSWER_TIMEOUT)
        .body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let exchange = async {
        let answer = forwarded.send().await?;
        let status = answer.status();
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = answer.bytes().await?;
        Ok::<_, reqwest::Error>((status, content_type, bytes))
    };
    // A gateway that stops answering (paused, cut off) leaves the cluster
    // when its lease expires: its callers are answered then, not after
    // the hour a long restore may take.
    let gone = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if !state.databases.gateway_live(&node.name) {
                return;
            }
        }
    };
    let (status, content_type, bytes) = tokio::select! {
        answered = exchange => match answered {
            Ok(answered) => answered,
            Err(e) => return unavailable(e.to_string()),
        },
        () = gone => return unavailable("it left the cluster (its lease expired) before answering".into()),
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::database_of;

    #[test]
    fn only_paths_about_one_database_are_forwarded() {
        assert_eq!(database_of("/v1/databases/shop"), Some("shop"));
        assert_eq!(database_of("/v1/databases/shop/branches/dev"), Some("shop"));
        assert_eq!(database_of("/v1/databases"), None);
        assert_eq!(database_of("/v1/databases/"), None);
        assert_eq!(database_of("/v1/status"), None);
    }
}
