select
    status,
    count(*)                             as orders,
    sum(cast(amount as numeric(12, 2)))  as revenue
from {{ source('orders', 'orders') }}
group by status
