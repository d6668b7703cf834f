//! Handlers (the seed's "controllers"): extract and validate the request, call a service,
//! shape the response. Request parsing reports every bad field at once.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, FieldError};
use crate::model::{NewLine, NewOrder};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Largest quantity of one product in one order.
pub const MAX_QUANTITY: i64 = 10_000;
/// Most products in one order.
pub const MAX_LINES: usize = 500;
/// Largest page.
pub const MAX_LIMIT: i64 = 1000;

/// A JSON body, checked for content type (415), size (413) and syntax (400), in the API's
/// error format.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(BODY_LIMIT)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))
    }
}

fn positive_id(value: Option<&Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    match value {
        None | Some(Value::Null) => errors.push(FieldError::new(field, "is required")),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v > 0 => return Some(v),
            Some(_) => errors.push(FieldError::new(field, "must be a positive integer")),
            None => errors.push(FieldError::new(
                field,
                "must be an integer id (no fractions, at most 2^63-1)",
            )),
        },
        Some(other) => errors.push(FieldError::new(
            field,
            format!("must be an integer, not {}", kind(other)),
        )),
    }
    None
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The ids a request names, well-formed or not (to check they exist even when other fields
/// are malformed, so one response names every problem).
#[derive(Debug, Default)]
pub struct References {
    /// `customerId`, if a positive integer.
    pub customer: Option<i64>,
    /// `payment_id`, if a positive integer.
    pub payment: Option<i64>,
    /// (position, `productId`) of each product given as a positive integer.
    pub products: Vec<(usize, i64)>,
}

/// Parses `POST /api/v1/orders`'s body, reporting every bad field. Duplicate products are
/// rejected (not merged): a client sending the same product twice most likely has a bug, and
/// merging would hide it.
pub fn parse_new_order(body: &Value) -> Result<NewOrder, ApiError> {
    parse_with_references(body).map_err(|(e, _)| e)
}

fn parse_with_references(body: &Value) -> Result<NewOrder, (ApiError, References)> {
    let mut refs = References::default();
    let result = parse_body(body, &mut refs);
    result.map_err(|e| (e, refs))
}

fn parse_body(body: &Value, refs: &mut References) -> Result<NewOrder, ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::Validation(vec![FieldError::new(
            "body",
            format!("must be a JSON object, not {}", kind(body)),
        )]));
    };
    let mut errors = Vec::new();
    let customer_id = positive_id(obj.get("customerId"), "customerId", &mut errors);
    let payment_id = positive_id(obj.get("payment_id"), "payment_id", &mut errors);
    refs.customer = customer_id;
    refs.payment = payment_id;
    let mut lines = Vec::new();
    match obj.get("products") {
        None | Some(Value::Null) => errors.push(FieldError::new("products", "is required")),
        Some(Value::Array(items)) if items.is_empty() => errors.push(FieldError::new(
            "products",
            "must list at least one product",
        )),
        Some(Value::Array(items)) if items.len() > MAX_LINES => errors.push(FieldError::new(
            "products",
            format!("lists {} products; at most {MAX_LINES}", items.len()),
        )),
        Some(Value::Array(items)) => {
            let mut seen: HashSet<i64> = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let Some(line) = item.as_object() else {
                    errors.push(FieldError::new(
                        format!("products[{i}]"),
                        format!("must be an object, not {}", kind(item)),
                    ));
                    continue;
                };
                let product = positive_id(
                    line.get("productId"),
                    &format!("products[{i}].productId"),
                    &mut errors,
                );
                if let Some(p) = product {
                    refs.products.push((i, p));
                }
                let field = format!("products[{i}].quantity");
                let quantity = match line.get("quantity") {
                    None | Some(Value::Null) => {
                        errors.push(FieldError::new(&field, "is required"));
                        None
                    }
                    Some(Value::Number(n)) => match n.as_i64() {
                        Some(q) if (1..=MAX_QUANTITY).contains(&q) => Some(q),
                        Some(q) if q < 1 => {
                            errors.push(FieldError::new(&field, "must be at least 1"));
                            None
                        }
                        _ => {
                            errors.push(FieldError::new(
                                &field,
                                format!("must be a whole number from 1 to {MAX_QUANTITY}"),
                            ));
                            None
                        }
                    },
                    Some(other) => {
                        errors.push(FieldError::new(
                            &field,
                            format!("must be an integer, not {}", kind(other)),
                        ));
                        None
                    }
                };
                if let Some(p) = product
                    && !seen.insert(p)
                {
                    errors.push(FieldError::new(
                        format!("products[{i}].productId"),
                        format!("product {p} is listed more than once; list it once with the total quantity"),
                    ));
                }
                if let (Some(product_id), Some(quantity)) = (product, quantity) {
                    lines.push(NewLine {
                        product_id,
                        quantity,
                    });
                }
            }
        }
        Some(other) => errors.push(FieldError::new(
            "products",
            format!("must be an array, not {}", kind(other)),
        )),
    }
    match (customer_id, payment_id, errors.is_empty()) {
        (Some(customer_id), Some(payment_id), true) => Ok(NewOrder {
            customer_id,
            payment_id,
            products: lines,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::Validation(vec![FieldError::new(
            "id",
            format!("`{raw}` is not a positive integer id"),
        )])),
    }
}

/// `GET /ping`.
pub async fn ping(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.orders.ping().await {
        Ok(Json(json!({"status": "ok"})))
    } else {
        Err(ApiError::Unavailable)
    }
}

/// `GET /`.
pub async fn info(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "name": "rainbow-api",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "database": state.backend.name(),
        "openapi": "/api/v1/openapi.json",
    }))
}

/// `GET /api/v1/orders/{id}`.
pub async fn get_order(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(raw) = raw.map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "id",
            format!("bad path segment: {e}"),
        )])
    })?;
    let id = parse_id(&raw)?;
    Ok(Json(state.orders.get(id).await?).into_response())
}

/// `GET /api/v1/orders?limit=&after_id=`.
pub async fn list_orders(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| {
        ApiError::Validation(vec![FieldError::new(
            "query",
            format!("malformed query string: {e}"),
        )])
    })?;
    let mut errors = Vec::new();
    let mut limit = 50;
    let mut after_id = 0;
    for (key, value) in &pairs {
        match key.as_str() {
            "limit" => match value.parse::<i64>() {
                Ok(v) if (1..=MAX_LIMIT).contains(&v) => limit = v,
                _ => errors.push(FieldError::new(
                    "limit",
                    format!("`{value}` is not a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
            "after_id" => match value.parse::<i64>() {
                Ok(v) if v >= 0 => after_id = v,
                _ => errors.push(FieldError::new(
                    "after_id",
                    format!("`{value}` is not an order id"),
                )),
            },
            _ => {}
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(Json(state.orders.list(after_id, limit).await?).into_response())
}

/// `POST /api/v1/orders`.
pub async fn create_order(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new = match parse_with_references(&body) {
        Ok(new) => new,
        Err((ApiError::Validation(mut errors), refs)) => {
            errors.extend(
                state
                    .orders
                    .unknown_references(refs.customer, refs.payment, &refs.products)
                    .await?,
            );
            return Err(ApiError::Validation(errors));
        }
        Err((other, _)) => return Err(other),
    };
    let order = state.orders.create(new).await?;
    let location = format!("/api/v1/orders/{}", order.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/v1/openapi.json".into())
}

/// A known path with a method it does not accept: a JSON 405 (axum adds `Allow`).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: Value) -> Vec<String> {
        match parse_new_order(&body) {
            Err(ApiError::Validation(f)) => f.into_iter().map(|f| f.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(fields(json!({})), ["customerId", "payment_id", "products"]);
        assert_eq!(
            fields(
                json!({"customerId": "7", "payment_id": 1.5, "products": [{"productId": 1, "quantity": 0}, 3, {"productId": 1, "quantity": 20000}]})
            ),
            [
                "customerId",
                "payment_id",
                "products[0].quantity",
                "products[1]",
                "products[2].quantity",
                "products[2].productId"
            ]
        );
        assert_eq!(
            fields(json!({"customerId": 1, "payment_id": 1, "products": []})),
            ["products"]
        );
        assert_eq!(fields(json!([1])), ["body"]);
        let ok = parse_new_order(
            &json!({"customerId": 1, "payment_id": 2, "products": [{"productId": 3, "quantity": 4}]}),
        );
        assert!(ok.is_ok());
    }
}
