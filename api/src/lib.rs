//! # The Rainbow orders API
//!
//! The seed's order service, in layers: [`routes`](app) -> [`handlers`] (extract, validate,
//! respond) -> [`service`] (business rules, one unit of work per order) -> [`repository`]
//! (sqlx queries) on the Rainbow DB of [`rainbow_db::source`]. Errors are one [`ApiError`]
//! that renders as JSON; a 500 never shows internals.
//!
//! `app(state)` is a plain `Router`, so tests drive it with `tower::ServiceExt::oneshot`.

pub mod coalesce;
pub mod error;
pub mod handlers;
pub mod loader;
pub mod model;
pub mod pool;
pub mod repository;
pub mod service;
pub mod writer;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use rainbow_db::{Backend, Database};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::{ApiError, FieldError};
pub use service::OrderService;

/// The OpenAPI 3 document served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Orders.
    pub orders: OrderService,
    /// The database kind.
    pub backend: Backend,
    /// Start time (for uptime).
    pub started: Instant,
}

impl AppState {
    /// State over a connected, migrated database.
    pub fn new(db: Database) -> Self {
        AppState {
            backend: db.backend,
            orders: OrderService::new(db),
            started: Instant::now(),
        }
    }
}

/// Connects to `url` and brings the Rainbow DB schema up to date.
pub async fn connect(url: &str, max_connections: u32) -> Result<Database, rainbow_db::DbError> {
    let db = rainbow_db::connect(url, max_connections).await?;
    rainbow_db::source::migrate(&db).await?;
    Ok(db)
}

/// The router: routes, body limit, request ids, tracing.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/ping", get(handlers::ping))
        .route("/", get(handlers::info))
        .route("/api/v1/orders", get(handlers::list_orders).post(handlers::create_order))
        .route("/api/v1/orders/{id}", get(handlers::get_order))
        .route("/api/v1/openapi.json", get(handlers::openapi))
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::not_found)
        .with_state(state)
        .layer(DefaultBodyLimit::max(handlers::BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
            })
            // One access-log line per request at INFO (status, latency); RAINBOW_LOG=warn mutes it.
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RequestIds::new()))
}

/// Request ids `PREFIX-N`: a random per-process prefix and a counter. Unique, cheap (no
/// random number per request), and they sort by arrival within a process.
#[derive(Clone)]
struct RequestIds {
    prefix: std::sync::Arc<str>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per process.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        RequestIds {
            prefix: format!("{:012x}", h.finish() & 0xffff_ffff_ffff).into(),
            next: std::sync::Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// How long to wait for the database at start-up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
