#!/usr/bin/env bash
# Benchmark of the orders API (not a test): on loopback, wrk drives POST /api/v1/orders (3
# products) and GET /api/v1/orders/{id} against rainbow-api on PostgreSQL; pgbench runs the
# same SQL work as transactions directly on the same PostgreSQL, with the same number of
# clients, in ROUNDS rounds (API then pgbench for each kind of work). Prints every round and
# the medians. Usage: scripts/bench-api.sh [SECONDS] [CLIENTS] [ROUNDS]
# RAINBOW_API_POOL (default: CLIENTS) and RAINBOW_API_WORKERS are passed on to the API.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CLIENTS="${2:-16}"
ROUNDS="${3:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rainbow-target}"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null;
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --release -p rainbow-api --quiet

PGPORT=55490
# shellcheck source=lib/pg.sh
source scripts/lib/pg.sh
PSQL=("$PGBIN/psql" -q -h 127.0.0.1 -p "$PGPORT" -U postgres)
"${PSQL[@]}" -c "CREATE DATABASE rainbow_bench" >/dev/null
URL="postgres://postgres@127.0.0.1:$PGPORT/rainbow_bench"

API_PORT=18090
# RAINBOW_API_WORKERS, if set, is passed on (tokio worker threads).
RAINBOW_LOG=warn DATABASE_URL="$URL" RAINBOW_API_ADDR="127.0.0.1:$API_PORT" RAINBOW_API_POOL="${RAINBOW_API_POOL:-$CLIENTS}" \
  "$CARGO_TARGET_DIR/release/rainbow-api" &
API_PID=$!
trap 'kill $API_PID 2>/dev/null || true; stop_pg' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$API_PORT/ping" >/dev/null && break; sleep 0.1; done

echo "==> reference data: 1,000 customers, 5 payment methods, 10,000 products, 100,000 orders"
"${PSQL[@]}" -d rainbow_bench <<'SQL' >/dev/null
INSERT INTO categories (name, created_at, updated_at) VALUES ('c', 0, 0);
INSERT INTO sellers (name, city, created_at, updated_at) VALUES ('s', 'x', 0, 0);
INSERT INTO brands (name, created_at, updated_at) VALUES ('b', 0, 0);
INSERT INTO promotions (name, coupon_type, price_treatment, created_at, updated_at) VALUES ('p', 'Percentage', 10, 0, 0);
INSERT INTO customers (name, email, city, created_at, updated_at) SELECT 'c' || g, 'c' || g || '@x', 'x', 0, 0 FROM generate_series(1, 1000) g;
INSERT INTO payments (method, created_at, updated_at) SELECT 'm' || g, 0, 0 FROM generate_series(1, 5) g;
INSERT INTO products (name, price, original_price, rating_average, review_count, sold_count, category_id, seller_id, brand_id, promotion_id, created_at, updated_at)
  SELECT 'p' || g, 1000 + g, 1100 + g, 4.5, 1, 1, 1, 1, 1, CASE WHEN g % 3 = 0 THEN 1 END, 0, 0 FROM generate_series(1, 10000) g;
-- Existing history, so both the API and pgbench start from the same populated, analyzed tables
-- (on empty tables PostgreSQL caches sequential-scan plans for the foreign-key checks).
INSERT INTO orders (customer_id, payment_id, created_at, updated_at) SELECT 1 + g % 1000, 1 + g % 5, 0, 0 FROM generate_series(1, 100000) g;
INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at)
  SELECT o, 1 + (o * k) % 10000, 1, 1000, NULL, 0, 0 FROM generate_series(1, 100000) o, generate_series(1, 3) k;
ANALYZE;
SQL

WORK="$(mktemp -d)"
cat > "$WORK/post.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  local body = string.format(
    '{"customerId":%d,"payment_id":%d,"products":[{"productId":%d,"quantity":%d},{"productId":%d,"quantity":%d},{"productId":%d,"quantity":%d}]}',
    math.random(1, 1000), math.random(1, 5),
    math.random(1, 3333), math.random(1, 5), math.random(3334, 6666), math.random(1, 5), math.random(6667, 10000), math.random(1, 5))
  return wrk.format("POST", "/api/v1/orders", {["Content-Type"] = "application/json"}, body)
end
LUA
# The statements rainbow-api runs for one order, as one transaction.
cat > "$WORK/post.sql" <<'SQL'
\set c random(1, 1000)
\set pay random(1, 5)
\set p1 random(1, 3333)
\set p2 random(3334, 6666)
\set p3 random(6667, 10000)
\set q random(1, 5)
BEGIN;
SELECT CAST(1 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM customers WHERE id = :c
  UNION ALL SELECT CAST(2 AS BIGINT), id, CAST(0 AS BIGINT), CAST(NULL AS BIGINT) FROM payments WHERE id = :pay
  UNION ALL SELECT CAST(3 AS BIGINT), id, price, promotion_id FROM products WHERE id IN (:p1, :p2, :p3);
WITH o AS (INSERT INTO orders (customer_id, payment_id, created_at, updated_at) VALUES (:c, :pay, 0, 0) RETURNING id)
  INSERT INTO orderdetails (order_id, product_id, quantity, price, promotion_id, created_at, updated_at)
  SELECT o.id, p.id, :q, p.price, p.promotion_id, 0, 0 FROM o, products p WHERE p.id IN (:p1, :p2, :p3) RETURNING order_id;
END;
SQL

rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99() { awk '/ 99%/ {print $2}' "$1"; }
tps() { awk '/^tps/ {print $3}' "$1"; }
PGB=("$PGBIN/pgbench" -n -h 127.0.0.1 -p "$PGPORT" -U postgres -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" rainbow_bench)

# Rounds of the four phases, API and pgbench back to back for each kind of work, so a slow
# stretch of this shared VM hits both sides of a ratio rather than one.
for round in $(seq "$ROUNDS"); do
  wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "http://127.0.0.1:$API_PORT" > "$WORK/wrk-post-$round.txt"
  "${PGB[@]}" -f "$WORK/post.sql" > "$WORK/pgb-post-$round.txt" 2>&1 || cat "$WORK/pgb-post-$round.txt"
  ORDERS=$("${PSQL[@]}" -d rainbow_bench -tA -c "SELECT max(id) FROM orders")
  cat > "$WORK/get.lua" <<LUA
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/v1/orders/" .. math.random(1, $ORDERS))
end
LUA
  cat > "$WORK/get.sql" <<SQL
\set id random(1, $ORDERS)
SELECT o.id, o.customer_id, o.payment_id, o.created_at, o.updated_at, d.product_id, d.quantity, d.price, d.promotion_id
  FROM orders o LEFT JOIN orderdetails d ON d.order_id = o.id WHERE o.id = :id ORDER BY d.id;
SQL
  wrk -t2 -c"$CLIENTS" -d"${DURATION}s" --latency -s "$WORK/get.lua" "http://127.0.0.1:$API_PORT" > "$WORK/wrk-get-$round.txt"
  "${PGB[@]}" -f "$WORK/get.sql" > "$WORK/pgb-get-$round.txt" 2>&1 || cat "$WORK/pgb-get-$round.txt"
  for w in post get; do
    api=$(rps "$WORK/wrk-$w-$round.txt"); pg=$(tps "$WORK/pgb-$w-$round.txt")
    printf 'round %d %-5s api %9.0f req/s (p99 %s)  pgbench %9.0f tps  ratio %.2f\n' "$round" "$w" "$api" \
      "$(p99 "$WORK/wrk-$w-$round.txt")" "$pg" "$(awk -v a="$api" -v b="$pg" 'BEGIN {print a / b}')" | tee -a "$WORK/rounds.txt"
  done
done

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
printf '\n%-6s %12s %12s %12s %14s\n' "work" "api req/s" "pgbench tps" "api p99" "ratio (median)"
for w in post get; do
  api=$(for r in $(seq "$ROUNDS"); do rps "$WORK/wrk-$w-$r.txt"; done | median)
  pg=$(for r in $(seq "$ROUNDS"); do tps "$WORK/pgb-$w-$r.txt"; done | median)
  lat=$(for r in $(seq "$ROUNDS"); do p99 "$WORK/wrk-$w-$r.txt"; done | tr '\n' ' ')
  ratio=$(awk -v w="$w" '$3 == w {print $NF}' "$WORK/rounds.txt" | median)
  printf '%-6s %12.0f %12.0f %12s %14.2f   (p99 per round: %s)\n' "$w" "$api" "$pg" "" "$ratio" "$lat"
done
rm -rf "$WORK"
