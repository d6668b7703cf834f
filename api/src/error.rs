//! [`ApiError`]: the API's one error type and its HTTP rendering. Client errors carry a code
//! and, for validation, every bad field; a 500 never shows internals (the cause is logged).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Where: `customerId`, `products[2].quantity`, `limit`, …
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is invalid; every bad field is listed.
    #[error("invalid request")]
    Validation(Vec<FieldError>),
    /// The body is not JSON at all.
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method.
    #[error("this route does not accept the method; see /api/v1/openapi.json")]
    MethodNotAllowed,
    /// The body is not `application/json`.
    #[error("expected a body with Content-Type application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The database does not answer.
    #[error("the database is unavailable")]
    Unavailable,
    /// A bug or an unexpected database failure: logged, never shown.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for ApiError {
    /// A database that cannot be reached (pool closed or exhausted, connection lost) is a 503
    /// the client may retry; anything else is a 500.
    fn from(e: sqlx::Error) -> Self {
        if unreachable_database(&e) {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::Unavailable
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

impl ApiError {
    /// The error for each of several requests that failed together with `e` (logged once by
    /// the caller): 503 when the database cannot be reached, otherwise 500.
    pub fn shared(e: &sqlx::Error) -> Self {
        if unreachable_database(e) {
            ApiError::Unavailable
        } else {
            ApiError::Internal(e.to_string().into())
        }
    }
}

/// The pool is closed or exhausted, or the connection was lost: the client may retry.
fn unreachable_database(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    fields: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Validation(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let fields: &[FieldError] = match &self {
            ApiError::Validation(f) => f,
            _ => &[],
        };
        let body = Body {
            error: ErrorBody {
                code,
                message: self.to_string(),
                fields,
            },
        };
        (status, Json(body)).into_response()
    }
}
