-- Every extracted version of a brand row (the master dataset keeps one per day it changed).
SELECT
    id AS brand_id,
    name,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'brands') }}
