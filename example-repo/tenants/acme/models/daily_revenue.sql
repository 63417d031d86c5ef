-- Revenue per day and sales channel. Incremental: each run recomputes the last 3 days
-- (late refunds change them) and merges them on (order_date, channel).
select
    order_date,
    channel,
    count(distinct order_id)         as orders,
    count(distinct customer_id)      as customers,
    sum(total_amount)                as revenue,
    round(avg(total_amount), 2)      as avg_order_value
from {{ ref('stg_orders') }}
{% if is_incremental() %}
where order_date >= (select max(order_date) - 3 from {{ this }})
{% endif %}
group by order_date, channel
