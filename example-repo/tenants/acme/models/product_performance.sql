-- Units sold and revenue per product over the last 90 days.
with lines as (
    select
        product_id,
        sum(quantity)              as units_sold,
        sum(quantity * unit_price) as revenue
    from {{ source('order_items', 'order_items') }}
    where created_at >= current_date - interval '90 days'
    group by product_id
)

select
    p.product_id,
    p.sku,
    p.name,
    p.category,
    coalesce(l.units_sold, 0) as units_sold_90d,
    coalesce(l.revenue, 0)    as revenue_90d,
    rank() over (partition by p.category order by coalesce(l.revenue, 0) desc) as category_rank
from {{ source('products', 'products') }} as p
left join lines as l using (product_id)
where p.is_active
