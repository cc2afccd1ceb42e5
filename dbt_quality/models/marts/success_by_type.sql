-- Verified success per task type over the whole lake (the success-rate test reads it). Counted from
-- stg_trajectories, a view of the lake, and not summed from success_by_day: a mart read by another
-- would be as stale as its last build when only this one is materialised (from the UI, say).
select
    task_type,
    count(*) as trajectories,
    count(*) filter (where verified_success) as verified_successes,
    round(count(*) filter (where verified_success) / count(*), 4) as success_rate
from {{ ref('stg_trajectories') }}
group by all
order by all
