-- Batch view: the five most profitable products (sales minus discounts) of each category.
WITH profit AS (
    SELECT
        p.product_id,
        p.category_id,
        SUM(fs.extended_sales_amount - fs.extended_discount_amount) AS profit
    FROM {{ ref('fact_sales') }} AS fs
    JOIN {{ ref('dim_products') }} AS p ON fs.product_key = p.product_key
    GROUP BY p.product_id, p.category_id
)
SELECT
    c.name AS category,
    pr.product_id,
    cur.name AS product_name,
    pr.profit,
    ROW_NUMBER() OVER (PARTITION BY pr.category_id ORDER BY pr.profit DESC, pr.product_id) AS profit_rank
FROM profit AS pr
JOIN {{ ref('dim_products') }} AS cur ON cur.product_id = pr.product_id AND cur.is_current
JOIN {{ ref('dim_categories') }} AS c ON c.category_id = pr.category_id AND c.is_current
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY pr.category_id ORDER BY pr.profit DESC, pr.product_id) <= 5
