-- Batch view: orders and sales per payment method.
SELECT
    p.method AS payment_method,
    COUNT(DISTINCT fs.order_transaction) AS orders,
    SUM(fs.extended_sales_amount) AS sales_amount
FROM {{ ref('fact_sales') }} AS fs
JOIN {{ ref('dim_payments') }} AS p ON fs.payment_key = p.payment_key
GROUP BY p.method
