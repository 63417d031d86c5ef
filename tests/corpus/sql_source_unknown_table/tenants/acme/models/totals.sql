-- totals per customer
select customer_id, count(*) as n
from {{ source('orders', 'customers') }}
group by 1
