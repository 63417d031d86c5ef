-- Account health: CRM account, current MRR from billing and support load of the last 30 days.
with current_mrr as (
    select c.crm_account_id as account_id, sum(s.monthly_amount) as mrr
    from {{ ref('stg_subscriptions') }} as s
    join {{ source('billing', 'customers') }} as c on c.customer_id = s.customer_id
    where s.status in ('active', 'past_due')
    group by c.crm_account_id
),

tickets as (
    select
        account_id,
        count(*)                                          as tickets_30d,
        count(*) filter (where solved_at is null)         as open_tickets,
        count(*) filter (where hours_to_resolution > sla_hours) as sla_breaches_30d
    from {{ ref('ticket_sla') }}
    where created_at >= current_date - interval '30 days'
    group by account_id
)

select
    a.account_id,
    a.account_name,
    a.region,
    a.account_manager,
    coalesce(m.mrr, 0)              as mrr,
    coalesce(t.tickets_30d, 0)      as tickets_30d,
    coalesce(t.open_tickets, 0)     as open_tickets,
    case
        when coalesce(m.mrr, 0) = 0 or coalesce(t.sla_breaches_30d, 0) >= 3 then 'high'
        when coalesce(t.open_tickets, 0) >= 5 then 'medium'
        else 'low'
    end                             as churn_risk,
    a.modified_at
from {{ source('crm_accounts', 'accounts') }} as a
left join current_mrr as m using (account_id)
left join tickets as t using (account_id)
{% if is_incremental() %}
where a.modified_at >= (select max(modified_at) from {{ this }})
{% endif %}
