-- Minutes per machine, day and state, from state-change events.
-- Incremental: only days with new events are recomputed, merged on (machine_id, event_date).
with events as (
    select
        machine_id,
        state,
        event_at,
        lead(event_at) over (partition by machine_id order by event_at) as next_event_at
    from {{ source('machine_events', 'machine_events') }}
)

select
    machine_id,
    cast(event_at as date) as event_date,
    sum(case when state = 'running' then extract(epoch from next_event_at - event_at) / 60 else 0 end)
        as minutes_running,
    sum(case when state = 'idle' then extract(epoch from next_event_at - event_at) / 60 else 0 end)
        as minutes_idle,
    sum(case when state = 'down' then extract(epoch from next_event_at - event_at) / 60 else 0 end)
        as minutes_down
from events
where next_event_at is not null
{% if is_incremental() %}
  and cast(event_at as date) >= (select max(event_date) from {{ this }})
{% endif %}
group by machine_id, cast(event_at as date)
