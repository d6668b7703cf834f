-- Every extracted version of a promotion row (the master dataset keeps one per day it changed).
SELECT
    id AS promotion_id,
    name,
    coupon_type,
    price_treatment,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'promotions') }}
