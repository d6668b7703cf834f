-- One row per day from the first to the last order (plus a week either side).
WITH bounds AS (
    SELECT
        DATE_SUB(MIN(DATE(created_at)), INTERVAL 7 DAY) AS first_day,
        DATE_ADD(MAX(DATE(updated_at)), INTERVAL 7 DAY) AS last_day
    FROM {{ ref('stg_orders') }}
)
SELECT
    CAST(FORMAT_DATE('%Y%m%d', day) AS INT64) AS date_key,
    day AS date,
    EXTRACT(YEAR FROM day) AS year,
    EXTRACT(QUARTER FROM day) AS quarter,
    EXTRACT(MONTH FROM day) AS month,
    EXTRACT(DAY FROM day) AS day_of_month,
    EXTRACT(DAYOFWEEK FROM day) AS day_of_week_number,
    FORMAT_DATE('%A', day) AS day_of_week,
    EXTRACT(DAYOFWEEK FROM day) IN (1, 7) AS is_weekend
FROM UNNEST(GENERATE_DATE_ARRAY((SELECT first_day FROM bounds), (SELECT last_day FROM bounds))) AS day
