-- Subscriptions with a monthly amount, whatever their billing interval.
select
    subscription_id,
    customer_id,
    plan_id,
    status,
    billing_interval,
    cast(started_at as date)  as started_on,
    cast(canceled_at as date) as canceled_on,
    case billing_interval
        when 'year' then amount_cents / 12.0 / 100
        else amount_cents / 100.0
    end                       as monthly_amount
from {{ source('billing', 'subscriptions') }}
