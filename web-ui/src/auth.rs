//! Who may do what: the operator token (every request when one is set) and the CSRF token
//! (every state-changing request), enforced by one middleware so no handler can forget them.
//!
//! - Token: `Authorization: Bearer TOKEN` or the `rainbow_ui_token` cookie that `/login` sets
//!   (HttpOnly, SameSite=Strict). Without it an HTML GET is redirected to `/login`, anything
//!   else gets 401. `/login` and `/static/*` are public.
//! - CSRF: a POST must carry the process's token as the `csrf` form field or the
//!   `X-CSRF-Token` header, and a present `Origin` must be this host.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use leptos::prelude::*;
use serde::Deserialize;

use crate::error::UiError;
use crate::shell::{csrf_field, page};
use crate::state::UiState;

/// Name of the cookie holding the operator token.
const COOKIE: &str = "rainbow_ui_token";
/// Largest form body accepted (bytes).
pub(crate) const MAX_FORM_BYTES: usize = 64 * 1024;

/// Constant-time comparison (no early exit on the first differing byte).
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn presented_token(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The middleware: token, then Origin and CSRF on state-changing methods.
pub(crate) async fn guard(State(state): State<UiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = path.starts_with("/static/") || path == "/login";
    if let Some(token) = &state.inner.options.token
        && !public
        && !presented_token(&req).is_some_and(|t| same(&t, token))
    {
        let wants_html = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        if req.method() == Method::GET && wants_html {
            return Redirect::to("/login").into_response();
        }
        return UiError::Unauthorized.into_response();
    }
    // Only POST changes state; other methods go on to the router (405 where not routed).
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin != "null" && origin_host != host {
            return UiError::Csrf.into_response();
        }
    }
    let header_token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return UiError::TooLarge(MAX_FORM_BYTES).into_response(),
    };
    let form_token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes)
        .ok()
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "csrf").map(|(_, v)| v));
    let ok = header_token
        .or(form_token)
        .is_some_and(|t| same(&t, state.csrf_token()));
    if !ok {
        return UiError::Csrf.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `GET /login`: the token form.
pub(crate) async fn login_form(State(state): State<UiState>) -> Html<String> {
    Html(login_page(&state, None))
}

fn login_page(state: &UiState, error: Option<&str>) -> String {
    let error = error.map(|e| {
        let e = e.to_owned();
        view! { <p class="error field-error">{e}</p> }
    });
    page(
        "Log in",
        "",
        view! {
            <h1>"Operator token"</h1>
            <form method="post" action="/login" class="card">
                {csrf_field(state.csrf_token())}
                <label>"Token (RAINBOW_UI_TOKEN)" <input type="password" name="token" autofocus/></label>
                {error}
                <button type="submit">"Log in"</button>
            </form>
        }
        .into_any(),
    )
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /login`: sets the token cookie when the token is right.
pub(crate) async fn login(
    State(state): State<UiState>,
    crate::shell::Form(form): crate::shell::Form<LoginForm>,
) -> Response {
    match &state.inner.options.token {
        Some(token) if same(&form.token, token) => {
            let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_owned()),
                ],
            )
                .into_response()
        }
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            Html(login_page(&state, Some("wrong token"))),
        )
            .into_response(),
        None => Redirect::to("/").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn comparison_needs_equal_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }
}
