-- Each accepted synthesized task's tokens count once in synthesis_by_generation, however many
-- essences it was made from (a composition has several): per generation, mutation and type, the
-- mart's tokens equal the sum of the accepted rows' own. A row here is a group that disagrees.
-- An error (a blocking check on the mart, named by the meta: the test reads two nodes).
{{ config(severity='error', meta={'dagster': {'ref': {'name': 'synthesis_by_generation'}}}) }}
with expected as (
    select generation, mutation, task_type, sum(tokens) as tokens
    from {{ source('adp', 'synthesized_tasks') }}
    group by all
)
select generation, mutation, task_type, e.tokens as expected_tokens, m.tokens as mart_tokens
from expected e
full outer join {{ ref('synthesis_by_generation') }} m using (generation, mutation, task_type)
where e.tokens is distinct from m.tokens
