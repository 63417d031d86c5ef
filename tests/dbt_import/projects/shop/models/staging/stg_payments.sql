select
    id as payment_id,
    order_id,
    method,
    {{ shop_utils.cents_to_dollars('amount_cents') }} as amount
from {{ source('raw_shop', 'payments') }}
