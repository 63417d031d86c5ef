-- Lifetime value and loyalty tier per customer.
with orders as (
    select
        customer_id,
        count(*)          as order_count,
        sum(total_amount) as lifetime_value,
        min(order_date)   as first_order_date,
        max(order_date)   as last_order_date
    from {{ ref('stg_orders') }}
    group by customer_id
)

select
    c.customer_id,
    c.email,
    c.country_code,
    coalesce(o.order_count, 0)       as order_count,
    coalesce(o.lifetime_value, 0)    as lifetime_value,
    o.first_order_date,
    o.last_order_date,
    case
        when coalesce(o.lifetime_value, 0) >= 5000 then 'gold'
        when coalesce(o.lifetime_value, 0) >= 1000 then 'silver'
        else 'bronze'
    end                              as tier
from {{ ref('stg_customers') }} as c
left join orders as o using (customer_id)
