{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        tags=['finance'],
        on_schema_change='append_new_columns'
    )
}}

select
    c.customer_id,
    c.customer_name,
    c.tier,
    count(o.order_id) as orders,
    coalesce(sum(o.paid), 0) as paid
from {{ ref('stg_customers') }} as c
left join {{ ref('orders_enriched') }} as o on o.customer_id = c.customer_id
group by c.customer_id, c.customer_name, c.tier
