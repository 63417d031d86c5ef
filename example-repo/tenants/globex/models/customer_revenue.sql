-- Invoiced revenue per customer and month, with the customer's segment.
select
    c.customer_id,
    c.name                                      as customer_name,
    c.segment,
    date_trunc('month', l.invoice_date)::date   as revenue_month,
    count(distinct l.invoice_id)                as invoices,
    sum(l.net_amount)                           as revenue
from {{ ref('stg_invoice_lines') }} as l
join {{ source('erp', 'customers') }} as c on c.customer_id = l.customer_id
group by 1, 2, 3, 4
