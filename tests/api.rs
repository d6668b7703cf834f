//! The orders API against a real database: every route and status code (PostgreSQL and
//! SQLite), rollback of an order that fails midway (alone and inside a group of concurrent
//! orders), 200 concurrent orders, concurrent valid and invalid orders and coalesced reads
//! each getting their own answer, the connection pool's rollback of a dropped transaction,
//! and 1,000+ requests generated from the OpenAPI document without a single 5xx.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use rainbow_api::{AppState, app};
use rainbow_db::Database;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{Backend, fresh_url};

on_both_backends!(
    every_route_and_status_code,
    concurrent_orders_are_all_persisted_with_correct_totals,
    an_order_failing_midway_leaves_no_rows,
    concurrent_orders_and_reads_each_get_their_own_answer,
    a_connection_dropped_mid_transaction_is_rolled_back_before_reuse
);

/// Prices of the fixture products 1..=20 (product 7 is on promotion 1).
fn price_of(product: i64) -> i64 {
    10_000 + product * 1_500
}

async fn setup(backend: Backend) -> (Router, Database, Option<tempfile::TempDir>) {
    let (url, dir) = fresh_url(backend).await;
    let db = rainbow_api::connect(&url, 16)
        .await
        .expect("connect and migrate");
    let mut sql = vec![
        "INSERT INTO categories (name, created_at, updated_at) VALUES ('books', 0, 0)".to_owned(),
        "INSERT INTO sellers (name, city, created_at, updated_at) VALUES ('Shop', 'Hanoi', 0, 0)".to_owned(),
        "INSERT INTO brands (name, created_at, updated_at) VALUES ('Brand', 0, 0)".to_owned(),
        "INSERT INTO promotions (name, coupon_type, price_treatment, created_at, updated_at) VALUES ('ten', 'Percentage', 10, 0, 0)".to_owned(),
    ];
    for c in 1..=5 {
        sql.push(format!("INSERT INTO customers (name, email, city, created_at, updated_at) VALUES ('c{c}', 'c{c}@x', 'Hue', 0, 0)"));
    }
    for m in ["card", "cash", "wallet"] {
        sql.push(format!(
            "INSERT INTO payments (method, created_at, updated_at) VALUES ('{m}', 0, 0)"
        ));
    }
    for p in 1..=20 {
        let promo = if p == 7 { "1" } else { "NULL" };
        sql.push(format!(
            "INSERT INTO products (name, price, original_price, rating_average, review_count, sold_count, category_id, seller_id, brand_id, promotion_id, created_at, updated_at) \
             VALUES ('p{p}', {}, {}, 4.5, 1, 1, 1, 1, 1, {promo}, 0, 0)",
            price_of(p),
            price_of(p) + 500
        ));
    }
    for s in sql {
        sqlx::query(sqlx::AssertSqlSafe(s))
            .execute(&db.pool)
            .await
            .expect("fixture");
    }
    (app(AppState::new(db.clone())), db, dir)
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let response = router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, value)
}

async fn post(router: &Router, body: Value) -> (StatusCode, axum::http::HeaderMap, Value) {
    call(
        router,
        Method::POST,
        "/api/v1/orders",
        Some("application/json"),
        body.to_string().into_bytes(),
    )
    .await
}

async fn get(router: &Router, uri: &str) -> (StatusCode, Value) {
    let (s, _, v) = call(router, Method::GET, uri, None, Vec::new()).await;
    (s, v)
}

fn fields(v: &Value) -> Vec<String> {
    v["error"]["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn count(db: &Database, table: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&db.pool)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .expect("count")
}

async fn every_route_and_status_code(backend: Backend) {
    let (router, db, _dir) = setup(backend).await;

    let (s, v) = get(&router, "/ping").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = get(&router, "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "rainbow-api");
    assert_eq!(
        v["database"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    );
    assert!(v["uptime_seconds"].as_f64().is_some());

    // Create: 201, Location, the prices and promotion at order time, the total.
    let (s, h, order) = post(&router, json!({"customerId": 2, "payment_id": 1, "products": [{"productId": 7, "quantity": 2}, {"productId": 3, "quantity": 1}]})).await;
    assert_eq!(s, StatusCode::CREATED, "{order}");
    let id = order["id"].as_i64().expect("id");
    assert_eq!(
        h.get(header::LOCATION).and_then(|l| l.to_str().ok()),
        Some(format!("/api/v1/orders/{id}").as_str())
    );
    assert!(
        h.get("x-request-id").is_some(),
        "every response carries a request id"
    );
    assert_eq!(order["customerId"], 2);
    assert_eq!(order["products"][0]["price"], price_of(7));
    assert_eq!(order["products"][0]["promotion_id"], 1);
    assert_eq!(order["products"][1]["promotion_id"], Value::Null);
    assert_eq!(order["total"], 2 * price_of(7) + price_of(3));
    let (s, fetched) = get(&router, &format!("/api/v1/orders/{id}")).await;
    assert_eq!((s, &fetched), (StatusCode::OK, &order));

    let (s, v) = get(&router, "/api/v1/orders/abc").await;
    assert_eq!(
        (s, fields(&v)),
        (StatusCode::BAD_REQUEST, vec!["id".to_owned()])
    );
    let (s, v) = get(&router, "/api/v1/orders/999999").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    // Pagination: a stable order and a cursor that walks every order once.
    for _ in 0..4 {
        assert_eq!(post(&router, json!({"customerId": 1, "payment_id": 2, "products": [{"productId": 1, "quantity": 1}]})).await.0, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut uri = "/api/v1/orders?limit=2".to_owned();
    loop {
        let (s, page) = get(&router, &uri).await;
        assert_eq!(s, StatusCode::OK);
        seen.extend(
            page["orders"]
                .as_array()
                .expect("orders")
                .iter()
                .map(|o| o["id"].as_i64().expect("id")),
        );
        match page["next_after_id"].as_i64() {
            Some(next) => uri = format!("/api/v1/orders?limit=2&after_id={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let (s, v) = get(&router, "/api/v1/orders").await;
    assert_eq!(
        (s, v["orders"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(5))
    );
    for bad in ["limit=0", "limit=1001", "limit=x", "after_id=-1"] {
        let (s, v) = get(&router, &format!("/api/v1/orders?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(fields(&v).len(), 1, "{bad}: {v}");
    }

    // Bad bodies: every bad field named, nothing written.
    let before = count(&db, "orders").await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["customerId", "payment_id", "products"]),
        (
            json!({"customerId": "2", "payment_id": 1.5, "products": {}}),
            vec!["customerId", "payment_id", "products"],
        ),
        (
            json!({"customerId": 1, "payment_id": 1, "products": []}),
            vec!["products"],
        ),
        (
            json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 1, "quantity": 0}, {"productId": 2, "quantity": -3}, {"productId": 3, "quantity": 10_001}, {"productId": 4}]}),
            vec![
                "products[0].quantity",
                "products[1].quantity",
                "products[2].quantity",
                "products[3].quantity",
            ],
        ),
        (
            json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 5, "quantity": 1}, {"productId": 5, "quantity": 2}]}),
            vec!["products[1].productId"],
        ),
        (
            json!({"customerId": 99, "payment_id": 42, "products": [{"productId": 1, "quantity": 1}, {"productId": 404, "quantity": 1}]}),
            vec!["customerId", "payment_id", "products[1].productId"],
        ),
        // Shape errors and unknown references are reported together.
        (
            json!({"customerId": 99, "payment_id": "x", "products": [{"productId": 404, "quantity": 1}]}),
            vec!["payment_id", "customerId", "products[0].productId"],
        ),
        (json!([1, 2]), vec!["body"]),
    ];
    for (body, expected) in cases {
        let (s, _, v) = post(&router, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(fields(&v), expected, "{body}: {v}");
    }
    let (s, _, v) = call(
        &router,
        Method::POST,
        "/api/v1/orders",
        Some("application/json"),
        b"{\"customerId\": ".to_vec(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_json"))
    );
    let (s, _, _) = call(
        &router,
        Method::POST,
        "/api/v1/orders",
        Some("text/plain"),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = call(
        &router,
        Method::POST,
        "/api/v1/orders",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let (s, _, v) = call(
        &router,
        Method::POST,
        "/api/v1/orders",
        Some("application/json"),
        big.into_bytes(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    assert_eq!(count(&db, "orders").await, before);

    let (s, v) = get(&router, "/api/v1/orders/%FF").await;
    assert_eq!(
        (s, fields(&v)),
        (StatusCode::BAD_REQUEST, vec!["id".to_owned()])
    );
    let (s, headers, v) = call(
        &router,
        Method::DELETE,
        "/api/v1/orders/1",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    assert_eq!(
        headers.get("allow").and_then(|h| h.to_str().ok()),
        Some("GET,HEAD")
    );
    let (s, v) = get(&router, "/nope").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = get(&router, "/api/v1/openapi.json").await;
    assert_eq!((s, v["openapi"].as_str()), (StatusCode::OK, Some("3.0.3")));

    // A total that does not fit in 64 bits is refused before anything is written.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET price = {} WHERE id = 20",
        i64::MAX / 2
    )))
    .execute(&db.pool)
    .await
    .expect("price");
    let before = count(&db, "orders").await;
    let (s, _, v) = post(
        &router,
        json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 20, "quantity": 3}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(fields(&v), vec!["products".to_owned()]);
    assert_eq!(count(&db, "orders").await, before);

    // The database going away: /ping says 503, and errors show no internals.
    db.pool.close().await;
    let (s, v) = get(&router, "/ping").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let (s, v) = get(&router, "/api/v1/orders/1").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        v,
        json!({"error": {"code": "unavailable", "message": "the database is unavailable"}})
    );
}

async fn concurrent_orders_are_all_persisted_with_correct_totals(backend: Backend) {
    let (router, db, _dir) = setup(backend).await;
    let router = Arc::new(router);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200i64 {
        let router = router.clone();
        tasks.spawn(async move {
            let products: Vec<Value> = (0..3)
                .map(|k| json!({"productId": (i + k * 7) % 20 + 1, "quantity": (i % 5) + 1 + k}))
                .collect();
            let expected: i64 = (0..3)
                .map(|k| price_of((i + k * 7) % 20 + 1) * ((i % 5) + 1 + k))
                .sum();
            let (s, _, v) = post(
                &router,
                json!({"customerId": i % 5 + 1, "payment_id": i % 3 + 1, "products": products}),
            )
            .await;
            (s, v, expected)
        });
    }
    let mut ids = Vec::new();
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        let (s, v, expected) = joined.expect("task");
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["total"], expected);
        ids.push(v["id"].as_i64().expect("id"));
        total += expected;
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(count(&db, "orders").await, 200);
    assert_eq!(count(&db, "orderdetails").await, 600);
    use sqlx::Row;
    let stored: i64 = sqlx::query("SELECT CAST(SUM(price * quantity) AS BIGINT) FROM orderdetails")
        .fetch_one(&db.pool)
        .await
        .and_then(|r| r.try_get::<i64, _>(0))
        .expect("sum");
    assert_eq!(stored, total);
}

async fn an_order_failing_midway_leaves_no_rows(backend: Backend) {
    let (router, db, _dir) = setup(backend).await;
    // Make the second line's insert fail inside the transaction, after the order row is
    // written (on SQLite a separate statement of the unit of work; on PostgreSQL inside the
    // one CTE statement).
    let trigger: &[&str] = match backend {
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_product_13() RETURNS trigger AS $$ BEGIN IF NEW.product_id = 13 THEN RAISE EXCEPTION 'injected failure for product 13'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_13 BEFORE INSERT ON orderdetails FOR EACH ROW EXECUTE FUNCTION refuse_product_13()",
        ],
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_13 BEFORE INSERT ON orderdetails FOR EACH ROW WHEN NEW.product_id = 13 BEGIN SELECT RAISE(ABORT, 'injected failure for product 13'); END",
        ],
    };
    for stmt in trigger {
        sqlx::query(sqlx::AssertSqlSafe(*stmt))
            .execute(&db.pool)
            .await
            .expect("trigger");
    }
    let (orders, lines) = (count(&db, "orders").await, count(&db, "orderdetails").await);
    let (s, _, v) = post(&router, json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 1, "quantity": 1}, {"productId": 13, "quantity": 1}]})).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        v,
        json!({"error": {"code": "internal", "message": "internal error"}}),
        "no internals leak"
    );
    assert_eq!(
        count(&db, "orders").await,
        orders,
        "the order row was rolled back"
    );
    assert_eq!(count(&db, "orderdetails").await, lines);
    // Without product 13 everything works on the same connection pool.
    let (s, _, _) = post(
        &router,
        json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 1, "quantity": 1}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    // Concurrent orders (grouped into shared transactions on PostgreSQL): the one naming
    // product 13 fails alone, every other is written.
    let (orders, lines) = (count(&db, "orders").await, count(&db, "orderdetails").await);
    let router = Arc::new(router);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30i64 {
        let router = router.clone();
        let product = if i == 17 { 13 } else { i % 12 + 1 };
        tasks.spawn(async move {
            let body = json!({"customerId": 1, "payment_id": 1, "products": [{"productId": 20, "quantity": 1}, {"productId": product, "quantity": 2}]});
            (i, post(&router, body).await.0)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, s) = joined.expect("task");
        let expected = if i == 17 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::CREATED
        };
        assert_eq!(s, expected, "order {i}");
    }
    assert_eq!(count(&db, "orders").await, orders + 29);
    assert_eq!(count(&db, "orderdetails").await, lines + 58);
}

async fn concurrent_orders_and_reads_each_get_their_own_answer(backend: Backend) {
    let (router, db, _dir) = setup(backend).await;
    let router = Arc::new(router);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120i64 {
        let router = router.clone();
        tasks.spawn(async move {
            // Lines in descending product order: they must come back as sent.
            let (first, second) = (20 - i % 10, 9 - i % 8);
            let body = match i % 6 {
                0 => json!({"customerId": 2, "payment_id": 2, "products": [{"productId": first, "quantity": 1}, {"productId": 99, "quantity": 1}]}),
                1 => json!({"customerId": 77, "payment_id": 3, "products": [{"productId": first, "quantity": 1}]}),
                _ => json!({"customerId": i % 5 + 1, "payment_id": i % 3 + 1, "products": [{"productId": first, "quantity": i % 4 + 1}, {"productId": second, "quantity": 1}]}),
            };
            let (s, headers, v) = post(&router, body).await;
            (i, s, headers, v, first, second)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, s, headers, v, first, second) = joined.expect("task");
        match i % 6 {
            0 => {
                assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
                assert_eq!(fields(&v), vec!["products[1].productId".to_owned()]);
            }
            1 => {
                assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
                assert_eq!(fields(&v), vec!["customerId".to_owned()]);
            }
            _ => {
                assert_eq!(s, StatusCode::CREATED, "{v}");
                assert_eq!(v["customerId"], i % 5 + 1);
                assert_eq!(v["payment_id"], i % 3 + 1);
                assert_eq!(v["products"][0]["productId"], first);
                assert_eq!(v["products"][1]["productId"], second);
                assert_eq!(v["products"][1]["price"], price_of(second));
                assert_eq!(v["total"], price_of(first) * (i % 4 + 1) + price_of(second));
                let id = v["id"].as_i64().expect("id");
                assert_eq!(
                    headers.get(header::LOCATION).and_then(|h| h.to_str().ok()),
                    Some(format!("/api/v1/orders/{id}").as_str())
                );
                created.push(v);
            }
        }
    }
    assert_eq!(created.len(), 80);
    assert_eq!(count(&db, "orders").await, 80);
    assert_eq!(count(&db, "orderdetails").await, 160);

    // Concurrent reads (coalesced): every order twice, and ids that do not exist.
    let mut reads = tokio::task::JoinSet::new();
    for order in created.iter().chain(created.iter()) {
        let (router, order) = (router.clone(), order.clone());
        reads.spawn(async move {
            let (s, v) = get(&router, &format!("/api/v1/orders/{}", order["id"])).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(v, order, "the stored order is the one created");
        });
    }
    for missing in [999_999i64, 1_000_000, 1_000_001] {
        let router = router.clone();
        reads.spawn(async move {
            let (s, v) = get(&router, &format!("/api/v1/orders/{missing}")).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        });
    }
    while let Some(joined) = reads.join_next().await {
        joined.expect("read");
    }
}

async fn a_connection_dropped_mid_transaction_is_rolled_back_before_reuse(backend: Backend) {
    let (url, _dir) = fresh_url(backend).await;
    let db = rainbow_api::connect(&url, 1).await.expect("connect");
    let pool = rainbow_api::pool::ConnectionPool::new(db.pool.clone());
    {
        let mut lease = pool.acquire().await.expect("acquire");
        let mut uow = rainbow_api::repository::UnitOfWork::begin(lease.conn(), db.backend)
            .await
            .expect("begin");
        sqlx::query("INSERT INTO customers (name, email, city, created_at, updated_at) VALUES ('x', 'x@x', 'Hue', 0, 0)")
            .execute(uow.conn())
            .await
            .expect("insert");
        // Dropped without commit or release, as when a request is cancelled.
    }
    // The pool's only connection comes back once it was checked; it is outside any
    // transaction and the insert is gone.
    let mut lease = pool.acquire().await.expect("acquire again");
    let mut uow = rainbow_api::repository::UnitOfWork::begin(lease.conn(), db.backend)
        .await
        .expect("a new transaction begins");
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM customers")
        .fetch_one(uow.conn())
        .await
        .and_then(|r| r.try_get(0))
        .expect("count");
    assert_eq!(n, 0, "the dropped transaction was rolled back");
    uow.commit().await.expect("commit");
    lease.release();
}

use rainbow_engine::random::SplitMix64 as Rng;

/// Values for a property of the schema: valid ones, boundaries, and every wrong type.
fn values_for(schema: &Value, rng: &mut Rng, depth: usize) -> Value {
    let wrong = [
        json!(null),
        json!(true),
        json!("7"),
        json!(""),
        json!(1.5),
        json!(-1),
        json!(0),
        json!(i64::MAX),
        json!(1e300),
        json!([]),
        json!({}),
        json!("💥\u{0}"),
        json!(u64::MAX),
    ];
    if rng.next_u64().is_multiple_of(3) {
        return rng.pick(&wrong).clone();
    }
    match schema["type"].as_str() {
        Some("integer") => {
            let min = schema["minimum"].as_i64().unwrap_or(0);
            let max = schema["maximum"].as_i64().unwrap_or(30);
            json!(*rng.pick(&[min, min + 1, max, max + 1, min - 1, (min + max) / 2]))
        }
        Some("array") if depth < 4 => {
            let n = rng.next_u64() % 4;
            json!(
                (0..n)
                    .map(|_| values_for(&schema["items"], rng, depth + 1))
                    .collect::<Vec<_>>()
            )
        }
        Some("object") if depth < 4 => {
            let mut obj = serde_json::Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    if !rng.next_u64().is_multiple_of(5) {
                        obj.insert(name.clone(), values_for(prop, rng, depth + 1));
                    }
                }
            }
            Value::Object(obj)
        }
        _ => rng.pick(&wrong).clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_generated_requests_never_get_a_5xx() {
    let (router, db, _dir) = setup(Backend::Postgres).await;
    let orders_before = count(&db, "orders").await;
    let spec: Value = serde_json::from_str(rainbow_api::OPENAPI).expect("OpenAPI JSON");
    let resolve = |s: &Value| -> Value {
        match s["$ref"].as_str().and_then(|r| r.rsplit('/').next()) {
            Some(name) => spec["components"]["schemas"][name].clone(),
            None => s.clone(),
        }
    };
    let mut rng = Rng::new(0x5EED_1234_ABCD_0001);
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::new();
    let paths = spec["paths"].as_object().expect("paths");
    while sent < 1200 {
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("operations") {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let mut uri = path.clone();
                let mut query = Vec::new();
                for p in &params {
                    let name = p["name"].as_str().unwrap_or("x");
                    let value = match rng.next_u64() % 4 {
                        0 => rng
                            .pick(&[
                                "abc",
                                "-1",
                                "0",
                                "99999999999999999999",
                                "%00",
                                "..%2F",
                                "1e3",
                                "",
                                " 1",
                                "🌈",
                            ])
                            .to_string(),
                        _ => values_for(&p["schema"], &mut rng, 0)
                            .to_string()
                            .trim_matches('"')
                            .to_owned(),
                    };
                    let value: String = value
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                                c.to_string()
                            } else {
                                format!("%{:02X}", c as u32 & 0xFF)
                            }
                        })
                        .collect();
                    if p["in"] == "path" {
                        uri = uri.replace(
                            &format!("{{{name}}}"),
                            if value.is_empty() { "x" } else { &value },
                        );
                    } else if !rng.next_u64().is_multiple_of(4) {
                        query.push(format!("{name}={value}"));
                    }
                }
                if !query.is_empty() {
                    uri = format!("{uri}?{}", query.join("&"));
                }
                let (body, content_type) = if method == "post" {
                    let schema =
                        resolve(&op["requestBody"]["content"]["application/json"]["schema"]);
                    let body = match rng.next_u64() % 6 {
                        0 => b"\xff\xfe not json".to_vec(),
                        1 => "[".repeat(200).into_bytes(),
                        // A valid order, built from the schema's property names.
                        2 => {
                            let line = &schema["properties"]["products"]["items"]["properties"];
                            let mut products = Vec::new();
                            for k in 0..=(rng.next_u64() % 3) {
                                let mut item = serde_json::Map::new();
                                for (name, _) in line.as_object().expect("line properties") {
                                    let v = if name == "quantity" {
                                        (rng.next_u64() % 10 + 1) as i64
                                    } else {
                                        (k * 6 + rng.next_u64() % 5 + 1) as i64
                                    };
                                    item.insert(name.clone(), json!(v));
                                }
                                products.push(Value::Object(item));
                            }
                            json!({"customerId": rng.next_u64() % 5 + 1, "payment_id": rng.next_u64() % 3 + 1, "products": products}).to_string().into_bytes()
                        }
                        _ => values_for(&schema, &mut rng, 0).to_string().into_bytes(),
                    };
                    (
                        body,
                        *rng.pick(&[
                            Some("application/json"),
                            Some("application/json; charset=utf-8"),
                            Some("text/plain"),
                            None,
                            Some("application/problem+json"),
                        ]),
                    )
                } else {
                    (Vec::new(), None)
                };
                // Now and then a method the document does not list for the path.
                let method = if rng.next_u64().is_multiple_of(8) {
                    rng.pick(&[Method::PUT, Method::DELETE, Method::PATCH])
                        .clone()
                } else {
                    Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method")
                };
                let (status, _, v) = call(&router, method.clone(), &uri, content_type, body).await;
                assert!(status.as_u16() < 500, "{method} {uri} -> {status}: {v}");
                if status.as_u16() >= 400 {
                    assert!(
                        v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                        "{method} {uri} -> {status}: not a JSON error body: {v}"
                    );
                }
                *statuses.entry(status.as_u16()).or_insert(0) += 1;
                sent += 1;
            }
        }
    }
    // Every 201 wrote exactly one order, and nothing refused wrote anything.
    let created = statuses.get(&201).copied().unwrap_or(0);
    assert_eq!(
        count(&db, "orders").await - orders_before,
        created,
        "orders written vs 201 answers among {sent} requests"
    );
    // The generator reached the interesting outcomes, and the service still answers.
    for code in [200, 201, 400, 404, 405, 415] {
        assert!(statuses.contains_key(&code), "no {code} among {statuses:?}");
    }
    assert_eq!(get(&router, "/ping").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_on_a_socket_and_shuts_down_gracefully() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, _dir) = fresh_url(Backend::Sqlite).await;
    let db = rainbow_api::connect(&url, 4).await.expect("connect");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rainbow_api::serve(listener, AppState::new(db), async {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id: "),
        "{response}"
    );
    assert!(response.ends_with("{\"status\":\"ok\"}"), "{response}");

    stop.send(()).expect("signal shutdown");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("the server stops promptly")
        .expect("task")
        .expect("serve ends without error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}
