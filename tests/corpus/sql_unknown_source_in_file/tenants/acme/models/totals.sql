select customer_id, count(*) as n
from {{ source('order', 'orders') }}
group by 1
