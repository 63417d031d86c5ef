select
    id,
    {{ cents_to_dolars('amount') }} as dollars
from {{ ref('stg') }}
