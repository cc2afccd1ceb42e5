#!/usr/bin/env bash
# The demo: run the example task files through the pipeline, then one generation of the synthesis
# loop offline (MiniWoB reseed: no model), then query the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export ADP_DATA_DIR=${ADP_DATA_DIR:-data}
# adp's default, exported so a TASKS_DIR in an older .env cannot send the synthesized files elsewhere.
export TASKS_DIR=${TASKS_DIR:-$ADP_DATA_DIR/inbox}
adp=.venv/bin/adp
$adp run examples/*.jsonl --policy oracle
$adp query "select task_type, count(*) as tasks, count(*) filter (where success) as succeeded from trajectories where generation = 0 group by 1 order by 1"

# Generation 1: the files the synthesized_tasks asset wrote for the sensor, run here directly
# (with ADP_SYNTH_MAX_GENERATION=1 the loop stops after them).
mapfile -t generated < <(find "$TASKS_DIR" -maxdepth 1 -name 'synth-*-g1.jsonl' | sort)
if ((${#generated[@]} == 0)); then
  echo "demo: error: no synthesized task file in $TASKS_DIR" >&2
  exit 1
fi
ADP_SYNTH_MAX_GENERATION=1 $adp run "${generated[@]}" --policy oracle
$adp query "select stage, count(*) as candidates from synthesis_rejects group by 1 union all select 'accepted', count(*) from synthesized_tasks order by 1"
echo "Generation 1, verified success (self-checked in Chromium, then run by the pipeline):"
$adp query "select generation, mutation, task_type, tasks, ran, succeeded, success_rate from synthesis_stats"

# The nightly job now (dbt build: marts and their tests; the training set into the data dir),
# then the delivery a trainer loads: one verified trajectory per task, OpenAI chat format.
$adp nightly >/dev/null || echo "demo: the nightly run reported failed checks (adp nightly prints them)" >&2
$adp query "select task_type, trajectories, verified_successes, success_rate from success_by_type"
export_file="$ADP_DATA_DIR/exports/demo-train.jsonl"
$adp export --out "$export_file" --val-fraction 0.1
echo "$export_file: $(wc -l <"$export_file") records; the first one:"
.venv/bin/python - "$export_file" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as handle:
    record = json.loads(handle.readline())
lines = json.dumps(record, indent=2, ensure_ascii=False).splitlines()
print("\n".join(lines[:60] + ([f"... ({len(lines) - 60} more lines)"] if len(lines) > 60 else [])))
PY
echo "Data in $ADP_DATA_DIR/ (DuckDB catalog: $ADP_DATA_DIR/adp.duckdb)."
echo "Open the UI with: ADP_POLICY=oracle .venv/bin/adp dev   (no model needed; the sensor watches $TASKS_DIR:"
echo "drop a task file there and watch it run)"
