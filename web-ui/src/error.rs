//! [`UiError`], the crate's one error type, and how it becomes an HTTP response (an HTML page
//! or a JSON body, with the status that fits).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything that can go wrong serving the UI.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The engine refused or failed (storage, selection, partitions, backfill planning).
    #[error(transparent)]
    Engine(#[from] rainbow_engine::Error),
    /// An id or key in the URL names nothing.
    #[error("{kind} `{id}` not found{hint}")]
    NotFound {
        /// What was looked for (`run`, `backfill`, `asset`).
        kind: &'static str,
        /// The id asked for.
        id: String,
        /// `; did you mean …?`, or empty.
        hint: String,
    },
    /// A request parameter is invalid.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A form body over the limit.
    #[error("the form is larger than {0} bytes")]
    TooLarge(usize),
    /// The path exists, the method does not.
    #[error("{method} is not allowed here")]
    MethodNotAllowed {
        /// The method used.
        method: String,
    },
    /// No or a wrong operator token.
    #[error("an operator token is required (log in at /login)")]
    Unauthorized,
    /// A state-changing request without the page's CSRF token.
    #[error(
        "the form is missing its CSRF token or it expired (the server restarted): reload the page"
    )]
    Csrf,
    /// The server could not bind or serve.
    #[error("serving on {addr}")]
    Serve {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Refused configuration (no token on a public address).
    #[error("{0}")]
    Config(String),
}

impl UiError {
    /// Not found, with no suggestion.
    pub(crate) fn not_found(kind: &'static str, id: impl Into<String>) -> UiError {
        UiError::NotFound {
            kind,
            id: id.into(),
            hint: String::new(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            UiError::NotFound { .. } => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Unauthorized => StatusCode::UNAUTHORIZED,
            UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            UiError::Engine(
                rainbow_engine::Error::Selection { .. }
                | rainbow_engine::Error::Partition { .. }
                | rainbow_engine::Error::Config { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            UiError::Engine(rainbow_engine::Error::NotFound { .. }) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message with its cause chain.
    pub fn message(&self) -> String {
        rainbow_engine::error::error_chain(self)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("{}", self.message());
        }
        let message = self.message();
        let mut response = (status, crate::shell::error_page(status, &message)).into_response();
        // The JSON twin of the error, for clients that asked for JSON (see `shell::json_errors`).
        response
            .extensions_mut()
            .insert(crate::shell::ErrorMessage(message));
        response
    }
}

/// Result of the crate.
pub type Result<T, E = UiError> = std::result::Result<T, E>;
