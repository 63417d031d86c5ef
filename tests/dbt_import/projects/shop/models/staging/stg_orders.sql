{{ config(materialized='view') }}

select
    id as order_id,
    customer_id,
    {{ clean_status('status') }} as status,
    amount_cents,
    ordered_on
from {{ source('raw_shop', 'orders') }}
where amount_cents >= {{ var('min_order_cents') }}
