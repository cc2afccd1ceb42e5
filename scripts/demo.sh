#!/usr/bin/env bash
# The demo: run the example task files through the pipeline, then query the result.
set -euo pipefail
cd "$(dirname "$0")/.."
export ADP_DATA_DIR=${ADP_DATA_DIR:-data}
.venv/bin/adp run examples/*.jsonl --policy oracle
.venv/bin/adp query "select task_type, count(*) as tasks, count(*) filter (where success) as succeeded from trajectories group by 1 order by 1"
echo "Data in $ADP_DATA_DIR/ (DuckDB catalog: $ADP_DATA_DIR/adp.duckdb). Open the UI with: .venv/bin/adp dev"
