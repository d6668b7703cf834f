{#- Fails for business keys with more than one current row or overlapping validity intervals. #}
{% test scd2_valid(model, column_name) %}
WITH versions AS (
    SELECT
        {{ column_name }} AS business_key,
        valid_from,
        valid_to,
        is_current,
        LEAD(valid_from) OVER (PARTITION BY {{ column_name }} ORDER BY valid_from, valid_to) AS next_from
    FROM {{ model }}
)
SELECT business_key FROM versions GROUP BY business_key HAVING COUNTIF(is_current) > 1
UNION ALL
SELECT business_key FROM versions WHERE next_from < valid_to
{% endtest %}
