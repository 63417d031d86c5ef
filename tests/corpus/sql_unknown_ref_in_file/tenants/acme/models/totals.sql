select *
from {{ ref('customers') }}
