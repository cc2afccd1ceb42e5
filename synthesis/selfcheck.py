"""Self-check by execution: a candidate is kept only if its gold solution passes its own check
and a null solution fails it (a check that cannot fail proves nothing).

The null solution keeps the gold solution's shape and does nothing: every function of the gold
code is defined with the same signature and ``return None``, nothing else runs, and the answer
is empty. On a web task it is ``complete_task`` without touching the page. Both run through the
same execution path as any task (the ``oracle`` policy replays them), so a check is judged in
the sandbox or browser the task will really run in.
"""

from __future__ import annotations

import ast

from runtimes.core import TaskSpec, TaskType, Trajectory

NULL_SUFFIX = "--null"
_TASK_ID_MAX_CHARS = 200


def null_variant(task: TaskSpec) -> TaskSpec:
    """``task`` with its reference solution replaced by the null solution, under ``<id>--null``."""
    calls: list[dict[str, object]] = []
    if task.task_type is not TaskType.WEB:
        references = task.constraints.reference_tool_calls or []
        gold = next((str(c.arguments.get("code", "")) for c in references if c.name == "python_executor"), "")
        calls.append({"name": "python_executor", "arguments": {"code": null_code(gold)}})
    calls.append({"name": "complete_task", "arguments": {"answer": ""}})
    line = task.model_dump(mode="json", exclude_none=True)
    line["task_id"] = task.task_id[: _TASK_ID_MAX_CHARS - len(NULL_SUFFIX)] + NULL_SUFFIX
    line["constraints"]["reference_tool_calls"] = calls
    return TaskSpec.model_validate(line, strict=False)


def null_code(gold: str) -> str:
    """The gold code's imports and functions (classes' methods too), every body ``return None``."""
    try:
        tree = ast.parse(gold)
    except SyntaxError:
        return "None\n"
    kept: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            kept.append(node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            kept.append(_hollow(node))
    return ast.unparse(ast.Module(body=kept, type_ignores=[])) + "\n" if kept else "None\n"


def _hollow(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> ast.stmt:
    if isinstance(node, ast.ClassDef):
        methods = [_hollow(item) for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)]
        node.body = methods or [ast.Pass()]
        return node
    node.body = [ast.Return(value=ast.Constant(value=None))]
    node.decorator_list = []
    return node


def judge(gold: Trajectory, null: Trajectory) -> str | None:
    """Why the candidate fails its self-check, or None when it passes it.

    Args:
        gold: the candidate run with its gold solution.
        null: the same task run with :func:`null_variant`'s solution.
    """
    if gold.verifier is None or null.verifier is None:
        return "the task has no check"
    if not gold.verifier.passed:
        why = gold.verifier.details or gold.error_message or "no detail"
        return f"its gold solution fails its own check: {why}"[:2000]
    if not gold.success:
        return f"its gold solution did not finish: {gold.error_type}: {gold.error_message}"[:2000]
    if null.verifier.passed:
        return "its check passes a null solution (return None, an empty answer): a check that cannot fail"
    return None
