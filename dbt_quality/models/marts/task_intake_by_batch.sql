-- Per batch: how many lines became tasks, of which type, and how many were rejected.
with accepted as (
    select batch, task_type, count(*) as tasks from {{ ref('stg_tasks') }} group by all
),
rejected as (
    select batch, count(*) as rejected from {{ ref('stg_task_rejects') }} group by all
),
batches as (
    select batch from accepted union select batch from rejected
)
select
    b.batch,
    coalesce(sum(a.tasks) filter (where a.task_type = 'code'), 0) as code_tasks,
    coalesce(sum(a.tasks) filter (where a.task_type = 'web'), 0) as web_tasks,
    coalesce(sum(a.tasks) filter (where a.task_type = 'reasoning'), 0) as reasoning_tasks,
    coalesce(sum(a.tasks), 0) as accepted,
    coalesce(any_value(r.rejected), 0) as rejected
from batches b
left join accepted a using (batch)
left join rejected r using (batch)
group by b.batch
