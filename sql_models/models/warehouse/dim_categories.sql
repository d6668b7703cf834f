-- SCD type 2 dimension of categories: one row per version, valid_from / valid_to (2100-01-01 for the
-- current row) / is_current.
{{ scd2(ref('stg_categories'), 'category_id', 'category_key', ['name']) }}
