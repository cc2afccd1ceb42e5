-- One row per trajectory: what ran, how it ended, what it cost. A generation counts only for a
-- task adp's synthesis wrote: a person's lineage on a task line is a claim (docs/pipeline.md).
select
    task_id,
    batch,
    task_type,
    success,
    coalesce(verified, false) as verified,
    verified_success,  -- the lake view's column: the one definition of a verified success
    error_type,
    policy,
    coalesce(model, policy) as model,
    case
        when exists (select 1 from {{ source('adp', 'synthesized_tasks') }} s where s.task_id = t.task_id)
            then coalesce(generation, 0)
        else 0
    end as generation,
    n_steps,
    total_duration,
    prompt_tokens,
    completion_tokens,
    total_tokens,
    cast(created_at as date) as day,
    created_at
from {{ source('adp', 'trajectories') }} t
