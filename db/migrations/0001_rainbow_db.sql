-- The Rainbow DB: the e-commerce source database written by the orders API and read by the
-- batch extract and the CDC stream. One copy, shared by every crate. `{id}` is the backend's
-- auto-increment primary key. Money is in integer minor units of the currency (BIGINT); times
-- are microseconds since the Unix epoch (UTC). Every table has updated_at for the extract.

CREATE TABLE IF NOT EXISTS customers (
    id          {id},
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    city        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS customers_by_updated ON customers (updated_at);

CREATE TABLE IF NOT EXISTS sellers (
    id          {id},
    name        TEXT NOT NULL,
    city        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sellers_by_updated ON sellers (updated_at);

CREATE TABLE IF NOT EXISTS brands (
    id          {id},
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS categories (
    id          {id},
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- coupon_type 'Percentage': price_treatment percent off; 'Fixed Amount': price_treatment
-- thousands of currency units off (the seed's `price_treatment * 1000`).
CREATE TABLE IF NOT EXISTS promotions (
    id              {id},
    name            TEXT NOT NULL,
    coupon_type     TEXT NOT NULL CHECK (coupon_type IN ('Percentage', 'Fixed Amount')),
    price_treatment BIGINT NOT NULL CHECK (price_treatment >= 0),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS payments (
    id          {id},
    method      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS products (
    id              {id},
    name            TEXT NOT NULL,
    price           BIGINT NOT NULL CHECK (price >= 0),
    original_price  BIGINT NOT NULL CHECK (original_price >= 0),
    rating_average  DOUBLE PRECISION NOT NULL,
    review_count    BIGINT NOT NULL,
    sold_count      BIGINT NOT NULL,
    category_id     BIGINT NOT NULL REFERENCES categories (id),
    seller_id       BIGINT NOT NULL REFERENCES sellers (id),
    brand_id        BIGINT NOT NULL REFERENCES brands (id),
    promotion_id    BIGINT REFERENCES promotions (id),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS products_by_updated ON products (updated_at);

CREATE TABLE IF NOT EXISTS orders (
    id          {id},
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    payment_id  BIGINT NOT NULL REFERENCES payments (id),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_updated ON orders (updated_at);

-- One row per product in an order, with the price and promotion at order time.
CREATE TABLE IF NOT EXISTS orderdetails (
    id           {id},
    order_id     BIGINT NOT NULL REFERENCES orders (id),
    product_id   BIGINT NOT NULL REFERENCES products (id),
    quantity     BIGINT NOT NULL CHECK (quantity > 0),
    price        BIGINT NOT NULL CHECK (price >= 0),
    promotion_id BIGINT REFERENCES promotions (id),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS orderdetails_by_order ON orderdetails (order_id);
CREATE INDEX IF NOT EXISTS orderdetails_by_updated ON orderdetails (updated_at);
