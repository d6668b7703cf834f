//! # Rainbow web UI
//!
//! Server-rendered pages for operators, over a code location's [`AssetGraph`] and run
//! storage: the lineage with live state, the asset catalog and asset pages, partitions,
//! the backfill launcher, backfills, runs with their logs, schedules and sensors, and the
//! code location's dashboard. Every page has a JSON twin at the same path (`?format=json`
//! or `Accept: application/json`).
//!
//! HTML comes from leptos's `view!` used as a typed template engine (`.to_html()`; no
//! hydration, no WebAssembly), so text and attribute values are always escaped. Forms are
//! plain HTML posting to axum handlers that answer 303, so everything works without
//! JavaScript; htmx (vendored, 2.0.11) polls backfill progress and tails run logs, and
//! `app.js` pans the lineage and refreshes its node states.
//!
//! The web process only reads storage and writes *requests*: a queued run or a requested
//! backfill that the daemon executes (`rainbow dev` runs both in one process). Module map:
//! [`state`] (shared state, [`CodeLocationUi`]), `auth` (operator token and CSRF), `shell`
//! (page shell, HTML/JSON negotiation), `layout` (cached lineage layout), `status` (each
//! asset's state), `svg` (charts), `pages` (one module per page).
//!
//! [`AssetGraph`]: rainbow_engine::AssetGraph

mod auth;
pub mod bench;
mod error;
mod layout;
mod pages;
mod shell;
pub mod state;
mod status;
mod svg;

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

pub use error::{Result, UiError};
pub use state::{Analysis, CodeLocationUi, DashboardFuture, UiOptions, UiState};

/// Every route of the UI, behind the token/CSRF guard.
pub fn router(state: UiState) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(lineage::lineage))
        .route("/assets", get(assets::catalog))
        .route("/assets/{*key}", get(assets::asset_page))
        .route("/assets-materialize", post(assets::materialize))
        .route("/partitions", get(partitions::partitions))
        .route("/backfills", get(backfills::list))
        .route(
            "/backfills/new",
            get(backfills::new_form).post(backfills::submit),
        )
        .route("/backfills/{id}", get(backfills::detail))
        .route("/backfills/{id}/cancel", post(backfills::cancel))
        .route("/backfills/{id}/resume", post(backfills::resume))
        .route(
            "/backfills/{id}/rerun-failed",
            post(backfills::rerun_failed),
        )
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::detail))
        .route("/runs/{id}/events", get(runs::tail))
        .route("/runs/{id}/reexecute", post(runs::reexecute))
        .route("/schedules", get(schedules::schedules))
        .route("/dashboard", get(dashboard::dashboard))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/static/{file}", get(static_file))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn(shell::json_errors))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method) -> UiError {
    UiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

async fn not_found(uri: axum::http::Uri) -> UiError {
    UiError::not_found("page", uri.path().to_owned())
}

/// The vendored and own static files, compiled into the binary.
async fn static_file(
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    let (body, mime): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("../static/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.js" => (
            include_bytes!("../static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (
            include_bytes!("../static/app.css"),
            "text/css; charset=utf-8",
        ),
        _ => {
            return UiError::not_found("file", file).into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A bound UI, ready to serve ([`bind`], then [`Server::run`]).
pub struct Server {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    state: UiState,
}

/// Binds the UI to `addr`: a non-loopback address needs an operator token
/// ([`UiOptions::token`]); a busy port is an error naming it. Nothing is served yet, so a
/// caller can report the address (or start the daemon) only once binding succeeded.
pub async fn bind(addr: SocketAddr, state: UiState) -> Result<Server> {
    if !addr.ip().is_loopback() && state.inner.options.token.is_none() {
        return Err(UiError::Config(format!(
            "refusing to serve on {addr} without an operator token: set RAINBOW_UI_TOKEN (or bind to 127.0.0.1)"
        )));
    }
    let serve_error = |source| UiError::Serve {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(serve_error)?;
    let local = listener.local_addr().map_err(serve_error)?;
    Ok(Server {
        listener,
        local,
        state,
    })
}

impl Server {
    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) -> Result<()> {
        tracing::info!("Rainbow UI on http://{}/", self.local);
        let local = self.local;
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await
            .map_err(|source| UiError::Serve {
                addr: local.to_string(),
                source,
            })
    }
}

/// [`bind`], then [`Server::run`] until `cancel` fires.
pub async fn serve(addr: SocketAddr, state: UiState, cancel: CancellationToken) -> Result<()> {
    bind(addr, state).await?.run(cancel).await
}
