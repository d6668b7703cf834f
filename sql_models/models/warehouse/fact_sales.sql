-- One row per item sold (an order line), joined to the dimension versions that were current on
-- the order's date. Money is exact: regular prices and sales amounts in integer đồng (INT64),
-- discount-derived amounts as NUMERIC (a percentage of a price may have fractions).
{{
    config(
        materialized='incremental',
        unique_key=['date_key', 'product_key', 'seller_key', 'promotion_key', 'customer_key', 'payment_key', 'order_transaction'],
        incremental_strategy='merge'
    )
}}

WITH orders AS (
    SELECT *
    FROM {{ ref('stg_orders') }}
    WHERE TRUE
    QUALIFY ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY updated_at DESC, dt DESC) = 1
),
order_lines AS (
    SELECT *
    FROM {{ ref('stg_orderdetails') }}
    WHERE TRUE
    QUALIFY ROW_NUMBER() OVER (PARTITION BY order_detail_id ORDER BY updated_at DESC, dt DESC) = 1
),
sales AS (
    SELECT
        o.order_id,
        DATE(o.created_at) AS order_date,
        o.customer_id,
        o.payment_id,
        l.product_id,
        l.promotion_id,
        l.quantity,
        l.price
    FROM order_lines AS l
    JOIN orders AS o ON l.order_id = o.order_id
    {% if is_incremental() %}
    -- Re-merge the last loaded day and everything after it.
    WHERE DATE(o.created_at) >= (
        SELECT MAX(d.date) FROM {{ this }} AS f JOIN {{ ref('dim_dates') }} AS d ON f.date_key = d.date_key
    )
    {% endif %}
),
priced AS (
    SELECT
        s.*,
        prom.promotion_key,
        CAST(
            CASE
                WHEN prom.coupon_type = 'Percentage' THEN CAST(s.price AS NUMERIC) * prom.price_treatment / 100
                WHEN prom.coupon_type = 'Fixed Amount' THEN CAST(prom.price_treatment * 1000 AS NUMERIC)
                ELSE CAST(0 AS NUMERIC)
            END AS NUMERIC
        ) AS discount_unit_price
    FROM sales AS s
    LEFT JOIN {{ ref('dim_promotions') }} AS prom
        ON s.promotion_id = prom.promotion_id
        AND s.order_date >= prom.valid_from AND s.order_date < prom.valid_to
)
SELECT
    dd.date_key,
    dp.product_key,
    ds.seller_key,
    COALESCE(p.promotion_key, 'none') AS promotion_key,
    dc.customer_key,
    dpay.payment_key,
    p.order_id AS order_transaction,
    p.quantity AS sales_quantity,
    p.price AS regular_unit_price,
    p.discount_unit_price,
    CAST(p.price - p.discount_unit_price AS NUMERIC) AS net_unit_price,
    p.quantity * p.price AS extended_sales_amount,
    CAST(p.quantity * p.discount_unit_price AS NUMERIC) AS extended_discount_amount
FROM priced AS p
JOIN {{ ref('dim_dates') }} AS dd ON dd.date = p.order_date
JOIN {{ ref('dim_products') }} AS dp
    ON p.product_id = dp.product_id AND p.order_date >= dp.valid_from AND p.order_date < dp.valid_to
JOIN {{ ref('dim_sellers') }} AS ds
    ON dp.seller_id = ds.seller_id AND p.order_date >= ds.valid_from AND p.order_date < ds.valid_to
JOIN {{ ref('dim_customers') }} AS dc
    ON p.customer_id = dc.customer_id AND p.order_date >= dc.valid_from AND p.order_date < dc.valid_to
JOIN {{ ref('dim_payments') }} AS dpay
    ON p.payment_id = dpay.payment_id AND p.order_date >= dpay.valid_from AND p.order_date < dpay.valid_to
