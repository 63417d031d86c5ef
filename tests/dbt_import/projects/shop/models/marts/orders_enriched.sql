select
    o.order_id,
    o.customer_id,
    o.status,
    l.label as status_label,
    o.ordered_on,
    coalesce(p.amount, 0) as paid
from {{ ref('stg_orders') }} as o
left join {{ ref('status_labels') }} as l on l.status = o.status
left join (
    select order_id, sum(amount) as amount
    from {{ ref('stg_payments') }}
    group by order_id
) as p on p.order_id = o.order_id
