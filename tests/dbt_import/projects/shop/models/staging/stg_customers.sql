select
    id as customer_id,
    name as customer_name,
    {{ clean_status('tier') }} as tier,
    updated_at
from {{ source('raw_shop', 'customers') }}
