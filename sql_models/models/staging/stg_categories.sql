-- Every extracted version of a categorie row (the master dataset keeps one per day it changed).
SELECT
    id AS category_id,
    name,
    TIMESTAMP_MICROS(created_at) AS created_at,
    TIMESTAMP_MICROS(updated_at) AS updated_at,
    dt
FROM {{ source('raw', 'categories') }}
