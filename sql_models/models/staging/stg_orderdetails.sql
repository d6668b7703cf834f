-- Every extracted version of a orderdetail row (the master dataset keeps one per day it changed).
SELECT
    id AS order_detail_id,
    order_id,
    product_id,
    quantity,
    price,
    promotion_id,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'orderdetails') }}
