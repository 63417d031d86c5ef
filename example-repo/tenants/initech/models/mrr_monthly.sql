-- Monthly recurring revenue per plan: every subscription active on the first of the month.
with months as (
    select generate_series(
        date_trunc('month', (select min(started_on) from {{ ref('stg_subscriptions') }})),
        date_trunc('month', current_date),
        interval '1 month'
    )::date as month
)

select
    m.month,
    s.plan_id,
    p.name                          as plan_name,
    count(distinct s.customer_id)   as paying_customers,
    sum(s.monthly_amount)           as mrr
from months as m
join {{ ref('stg_subscriptions') }} as s
  on s.started_on <= m.month
 and (s.canceled_on is null or s.canceled_on > m.month)
 and s.status in ('active', 'past_due', 'canceled')
left join {{ source('billing_plans', 'plans') }} as p on p.plan_id = s.plan_id
group by m.month, s.plan_id, p.name
