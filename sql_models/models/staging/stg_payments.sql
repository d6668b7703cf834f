-- Every extracted version of a payment row (the master dataset keeps one per day it changed).
SELECT
    id AS payment_id,
    method,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'payments') }}
