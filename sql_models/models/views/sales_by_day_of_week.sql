-- Batch view: sales per day of the week (1 = Sunday, as BigQuery numbers them).
SELECT
    dd.day_of_week_number,
    dd.day_of_week,
    SUM(fs.sales_quantity) AS sales_quantity,
    SUM(fs.extended_sales_amount) AS sales_amount
FROM {{ ref('fact_sales') }} AS fs
JOIN {{ ref('dim_dates') }} AS dd ON fs.date_key = dd.date_key
GROUP BY dd.day_of_week_number, dd.day_of_week
