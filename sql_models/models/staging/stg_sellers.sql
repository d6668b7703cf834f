-- Every extracted version of a seller row (the master dataset keeps one per day it changed).
SELECT
    id AS seller_id,
    name,
    city,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'sellers') }}
