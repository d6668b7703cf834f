-- SCD type 2 dimension of payments: one row per version, valid_from / valid_to (2100-01-01 for the
-- current row) / is_current.
{{ scd2(ref('stg_payments'), 'payment_id', 'payment_key', ['method']) }}
