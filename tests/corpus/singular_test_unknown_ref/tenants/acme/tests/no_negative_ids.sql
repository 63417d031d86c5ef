select id
from {{ ref('total') }}
where id < 0
