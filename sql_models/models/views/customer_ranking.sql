-- Batch view: customers ranked by what they spent.
SELECT
    c.customer_id,
    cur.name AS customer_name,
    COUNT(DISTINCT fs.order_transaction) AS orders,
    SUM(fs.extended_sales_amount) AS sales_amount,
    RANK() OVER (ORDER BY SUM(fs.extended_sales_amount) DESC) AS customer_rank
FROM {{ ref('fact_sales') }} AS fs
JOIN {{ ref('dim_customers') }} AS c ON fs.customer_key = c.customer_key
JOIN {{ ref('dim_customers') }} AS cur ON cur.customer_id = c.customer_id AND cur.is_current
GROUP BY c.customer_id, cur.name
