//! The page shell (head, navigation, styles), HTML-or-JSON negotiation ([`Format`],
//! [`respond`]) and the small formatting helpers every page uses. Every page is rendered by
//! leptos's `view!` (text and attribute values escaped); nothing here builds HTML by hand from
//! data.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::UiError;
use leptos::prelude::*;
use rainbow_engine::event::Micros;
use serde::Serialize;

/// Which twin of a page the client asked for: JSON with `?format=json` or an `Accept` header
/// preferring `application/json`; HTML otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    pub json: bool,
}

impl Format {
    fn of(uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Format {
        let query_json = uri.query().is_some_and(|q| {
            q.split('&')
                .any(|pair| pair == "format=json" || pair == "format=JSON")
        });
        let accept_json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                let json = a.find("application/json");
                let html = a.find("text/html");
                match (json, html) {
                    (Some(j), Some(h)) => j < h,
                    (Some(_), None) => true,
                    _ => false,
                }
            });
        Format {
            json: query_json || accept_json,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Format::of(&parts.uri, &parts.headers))
    }
}

/// An error's message, attached to its response so [`json_errors`] can answer JSON clients.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMessage(pub String);

/// Middleware: an error answered to a client that asked for JSON becomes
/// `{"error": message, "status": code}` with the same status.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let format = Format::of(req.uri(), req.headers());
    let response = next.run(req).await;
    if !format.json {
        return response;
    }
    match response.extensions().get::<ErrorMessage>().cloned() {
        Some(ErrorMessage(message)) => {
            let status = response.status();
            (
                status,
                axum::Json(serde_json::json!({ "error": message, "status": status.as_u16() })),
            )
                .into_response()
        }
        None => response,
    }
}

/// `Query<T>` whose rejection is a [`UiError`] (a styled page or JSON, status 400).
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, UiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| UiError::BadRequest(e.body_text()))
    }
}

/// `Form<T>` whose rejection is a [`UiError`] (status 400, or 413 when too large).
pub(crate) struct Form<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = UiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, UiError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Form(f.0))
            .map_err(|e| UiError::BadRequest(e.body_text()))
    }
}

/// The JSON twin (`data`) or the HTML page (`html`, rendered only when asked for).
pub(crate) fn respond<T: Serialize>(
    format: Format,
    data: &T,
    html: impl FnOnce(&T) -> String,
) -> Response {
    if format.json {
        axum::Json(data).into_response()
    } else {
        Html(html(data)).into_response()
    }
}

/// Navigation entries: (path, label).
const NAV: [(&str, &str); 7] = [
    ("/", "Lineage"),
    ("/assets", "Assets"),
    ("/runs", "Runs"),
    ("/backfills", "Backfills"),
    ("/schedules", "Schedules"),
    ("/dashboard", "Dashboard"),
    ("/backfills/new", "Launch backfill"),
];

/// A whole HTML document: `title`, the navigation with `active` marked, and `body`.
pub(crate) fn page(title: &str, active: &str, body: AnyView) -> String {
    let title = format!("{title} · Rainbow");
    let active = active.to_owned();
    let nav = NAV
        .iter()
        .map(|(href, label)| {
            let class = if *href == active { "active" } else { "" };
            view! { <a href=*href class=class>{*label}</a> }
        })
        .collect_view();
    let html = view! {
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{title}</title>
                <link rel="stylesheet" href="/static/app.css"/>
                <script src="/static/htmx.min.js" defer></script>
                <script src="/static/app.js" defer></script>
            </head>
            <body>
                <header>
                    <a class="brand" href="/">"Rainbow"</a>
                    <nav>{nav}</nav>
                </header>
                <main>{body}</main>
            </body>
        </html>
    }
    .to_html();
    format!("<!DOCTYPE html>{html}")
}

/// The page shown for an error: its status and message (escaped).
pub(crate) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let heading = status.to_string();
    let message = message.to_owned();
    Html(page(
        &heading,
        "",
        view! {
            <h1>{heading.clone()}</h1>
            <p class="error">{message}</p>
        }
        .into_any(),
    ))
}

/// RFC 3339 (UTC, seconds) or `-`.
pub(crate) fn time(ts: Option<Micros>) -> String {
    ts.and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A duration between two instants, human-sized (`850 ms`, `12.3 s`, `4 min 5 s`).
pub(crate) fn duration(start: Option<Micros>, end: Option<Micros>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => seconds((e - s) as f64 / 1e6),
        _ => "-".into(),
    }
}

/// Seconds, human-sized.
pub(crate) fn seconds(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        format!("{} min {} s", (secs / 60.0).floor(), (secs % 60.0).floor())
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub(crate) fn encode(value: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    utf8_percent_encode(value, KEEP).to_string()
}

/// The hidden CSRF field every state-changing form carries.
pub(crate) fn csrf_field(token: &str) -> impl IntoView + use<> {
    let token = token.to_owned();
    view! { <input type="hidden" name="csrf" value=token/> }
}

/// A status pill: `<span class="pill {status}">{label}</span>`.
pub(crate) fn pill(status: &str, label: impl Into<String>) -> AnyView {
    let class = format!("pill {}", status.to_ascii_lowercase());
    let label = label.into();
    view! { <span class=class>{label}</span> }.into_any()
}
