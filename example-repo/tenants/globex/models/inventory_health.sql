-- Days of cover per SKU and warehouse, from stock levels and the last 30 days of outflow.
with outflow as (
    select
        sku,
        warehouse_id,
        sum(-quantity) / 30.0 as avg_daily_outflow
    from {{ source('stock_movements', 'stock_movements') }}
    where quantity < 0
      and moved_at >= current_date - interval '30 days'
    group by sku, warehouse_id
)

select
    s.sku,
    s.warehouse_id,
    w.warehouse_name,
    s.on_hand,
    s.reorder_point,
    o.avg_daily_outflow,
    case when o.avg_daily_outflow > 0 then round(s.on_hand / o.avg_daily_outflow, 1) end
        as days_of_cover,
    case
        when s.on_hand <= 0 then 'stockout'
        when s.on_hand <= s.reorder_point then 'reorder'
        else 'ok'
    end as stock_status
from {{ source('inventory', 'stock_levels') }} as s
join {{ ref('stg_warehouses') }} as w using (warehouse_id)
left join outflow as o using (sku, warehouse_id)
