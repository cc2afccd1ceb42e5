-- Synthesized tasks accepted per generation, mutation and type, and how many essences they came from.
-- Tasks and tokens are counted over the tasks themselves and the parents in a CTE of their own:
-- joining through unnest(essence_ids) would count a composition's tokens once per parent.
with accepted as (
    select generation, mutation, task_type, count(distinct task_id) as accepted, sum(tokens) as tokens
    from {{ source('adp', 'synthesized_tasks') }}
    group by all
),
parents as (
    select generation, mutation, task_type, count(distinct essence_id) as parent_essences
    from (
        select generation, mutation, task_type, unnest(essence_ids) as essence_id
        from {{ source('adp', 'synthesized_tasks') }}
    )
    group by all
)
select
    a.generation,
    a.mutation,
    a.task_type,
    a.accepted,
    coalesce(p.parent_essences, 0) as parent_essences,
    a.tokens
from accepted a
left join parents p using (generation, mutation, task_type)
order by all
