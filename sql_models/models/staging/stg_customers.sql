-- Every extracted version of a customer row (the master dataset keeps one per day it changed).
SELECT
    id AS customer_id,
    name,
    email,
    city,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'customers') }}
