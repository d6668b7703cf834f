-- SCD type 2 dimension of products: one row per version, valid_from / valid_to (2100-01-01 for the
-- current row) / is_current.
{{ scd2(ref('stg_products'), 'product_id', 'product_key', ['name', 'price', 'original_price', 'rating_average', 'review_count', 'sold_count', 'category_id', 'seller_id', 'brand_id', 'promotion_id']) }}
