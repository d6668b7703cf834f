-- Every extracted version of a product row (the master dataset keeps one per day it changed).
SELECT
    id AS product_id,
    name,
    price,
    original_price,
    rating_average,
    review_count,
    sold_count,
    category_id,
    seller_id,
    brand_id,
    promotion_id,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'products') }}
