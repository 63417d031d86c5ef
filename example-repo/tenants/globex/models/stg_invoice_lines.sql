-- One row per invoice line, with its invoice's customer and date.
select
    l.invoice_line_id,
    l.invoice_id,
    i.customer_id,
    cast(i.invoice_date as date)            as invoice_date,
    l.product_id,
    l.quantity,
    l.unit_price,
    l.quantity * l.unit_price * (1 - coalesce(l.discount_pct, 0) / 100.0) as net_amount
from {{ source('erp', 'invoice_lines') }} as l
join {{ source('erp', 'invoices') }} as i on i.invoice_id = l.invoice_id
where i.status <> 'void'
