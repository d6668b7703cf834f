{#
  SCD type 2 from the full version history of a staging model (the immutable master dataset
  keeps every version that was extracted): one row per version whose tracked columns differ
  from the previous version's; valid_from = the version's date (the first version's: the row's
  creation date), valid_to = the next version's date or 2100-01-01, is_current for the last. Deterministic: the surrogate key is a hash of the
  business key and the version's time, so rebuilding gives the same table.
#}
{% macro scd2(relation, business_key, surrogate_key, columns) %}
WITH versions AS (
    SELECT
        *,
        ROW_NUMBER() OVER (PARTITION BY {{ business_key }}, updated_at ORDER BY dt DESC) AS version_rank
    FROM {{ relation }}
),
distinct_versions AS (
    SELECT * FROM versions WHERE version_rank = 1
),
flagged AS (
    SELECT
        *,
        (LAG(updated_at) OVER (PARTITION BY {{ business_key }} ORDER BY updated_at) IS NULL)
        {%- for column in columns %}
        OR ({{ column }} IS DISTINCT FROM LAG({{ column }}) OVER (PARTITION BY {{ business_key }} ORDER BY updated_at))
        {%- endfor %} AS is_change
    FROM distinct_versions
),
changes AS (
    SELECT * FROM flagged WHERE is_change
)
SELECT
    TO_HEX(MD5(CONCAT(CAST({{ business_key }} AS STRING), '|', CAST(UNIX_MICROS(updated_at) AS STRING)))) AS {{ surrogate_key }},
    {{ business_key }},
    {%- for column in columns %}
    {{ column }},
    {%- endfor %}
    updated_at,
    -- The first known version is valid from the row's creation: versions before the first
    -- extract (or between two extracts) are not in the master dataset.
    CASE
        WHEN LAG(updated_at) OVER (PARTITION BY {{ business_key }} ORDER BY updated_at) IS NULL
            THEN LEAST(DATE(created_at), DATE(updated_at))
        ELSE DATE(updated_at)
    END AS valid_from,
    COALESCE(
        DATE(LEAD(updated_at) OVER (PARTITION BY {{ business_key }} ORDER BY updated_at)),
        DATE '2100-01-01'
    ) AS valid_to,
    LEAD(updated_at) OVER (PARTITION BY {{ business_key }} ORDER BY updated_at) IS NULL AS is_current
FROM changes
{% endmacro %}
