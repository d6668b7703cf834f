-- Batch view: sellers ranked by sales amount (the seller version current today names them).
SELECT
    s.seller_id,
    cur.name AS seller_name,
    SUM(fs.sales_quantity) AS sales_quantity,
    SUM(fs.extended_sales_amount) AS sales_amount,
    RANK() OVER (ORDER BY SUM(fs.extended_sales_amount) DESC) AS sales_rank
FROM {{ ref('fact_sales') }} AS fs
JOIN {{ ref('dim_sellers') }} AS s ON fs.seller_key = s.seller_key
JOIN {{ ref('dim_sellers') }} AS cur ON cur.seller_id = s.seller_id AND cur.is_current
GROUP BY s.seller_id, cur.name
