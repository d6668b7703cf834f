-- SCD type 2 dimension of promotions: one row per version, valid_from / valid_to (2100-01-01 for the
-- current row) / is_current.
{{ scd2(ref('stg_promotions'), 'promotion_id', 'promotion_key', ['name', 'coupon_type', 'price_treatment']) }}
