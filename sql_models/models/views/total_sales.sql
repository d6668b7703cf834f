-- Batch view: total quantity, sales, profit (sales minus discounts) and the last sales date.
SELECT
    SUM(fs.sales_quantity) AS total_sales_quantity,
    SUM(fs.extended_sales_amount) AS total_sales_amount,
    SUM(fs.extended_sales_amount - fs.extended_discount_amount) AS total_profit,
    MAX(dd.date) AS current_run_date
FROM {{ ref('fact_sales') }} AS fs
JOIN {{ ref('dim_dates') }} AS dd ON fs.date_key = dd.date_key
