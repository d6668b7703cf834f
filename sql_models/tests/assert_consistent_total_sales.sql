-- The seed's check: the fact table's sales total equals the order lines' total in the master
-- dataset (latest version of each line). Returns a row when they differ.
WITH lines AS (
    SELECT quantity, price
    FROM {{ ref('stg_orderdetails') }}
    WHERE TRUE
    QUALIFY ROW_NUMBER() OVER (PARTITION BY order_detail_id ORDER BY updated_at DESC, dt DESC) = 1
),
raw_total AS (SELECT SUM(quantity * price) AS total, COUNT(*) AS lines FROM lines),
fact_total AS (SELECT SUM(extended_sales_amount) AS total, COUNT(*) AS lines FROM {{ ref('fact_sales') }})
SELECT r.total AS raw_total, f.total AS fact_total, r.lines AS raw_lines, f.lines AS fact_lines
FROM raw_total AS r CROSS JOIN fact_total AS f
WHERE r.total IS DISTINCT FROM f.total OR r.lines != f.lines
