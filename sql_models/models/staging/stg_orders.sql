-- Every extracted version of a order row (the master dataset keeps one per day it changed).
SELECT
    id AS order_id,
    customer_id,
    payment_id,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'orders') }}
