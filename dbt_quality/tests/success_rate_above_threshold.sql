-- Every task type's verified success rate is at least the threshold (ADP_SUCCESS_THRESHOLD, the
-- pipeline's own check). A warning, not an error: a low rate is news about the agent, not
-- broken data.
{{ config(severity='warn') }}
select task_type, success_rate
from {{ ref('success_by_type') }}
where success_rate < {{ var('adp_success_threshold', env_var('ADP_SUCCESS_THRESHOLD', '0.8')) }}
