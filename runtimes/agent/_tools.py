"""The agent's tools: their OpenAI function schemas and the typed arguments each accepts.

The type of a task decides its tools (DESIGN.md §6): code -> python_executor; web -> browser;
reasoning -> browser + python_executor; all -> complete_task.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtimes.core import BrowserArgs, TaskType, ToolName


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PythonExecutorArgs(_Args):
    code: str = Field(description="Python 3 source to run in a fresh sandbox; print what you need to see.")


class CompleteTaskArgs(_Args):
    answer: str = Field(description="The final answer or result of the task.")


TOOL_ARGS: dict[ToolName, type[BaseModel]] = {
    "python_executor": PythonExecutorArgs,
    "complete_task": CompleteTaskArgs,
    "browser": BrowserArgs,
}

_DESCRIPTIONS = {
    "python_executor": "Run Python code in an isolated sandbox (no network, no files but /tmp) and return "
    "its stdout and stderr.",
    "complete_task": "Finish the task and give the final answer. Call it exactly once, last.",
    "browser": "Act in a web browser: goto a URL, click/fill/select/press on a CSS selector, scroll, "
    "extract_text of an element, or snapshot the page as an outline whose [data-adp-id] selectors you can use.",
}

TOOLS_BY_TYPE: dict[TaskType, tuple[ToolName, ...]] = {
    TaskType.CODE: ("python_executor", "complete_task"),
    TaskType.WEB: ("browser", "complete_task"),
    TaskType.REASONING: ("browser", "python_executor", "complete_task"),
}


def known_tool(name: str) -> ToolName | None:
    """``name`` as a tool name, or None when no such tool exists (a model may call anything)."""
    return next((tool for tool in TOOL_ARGS if tool == name), None)


def tool_schema(name: ToolName) -> dict[str, Any]:
    """The OpenAI ``tools`` entry of tool ``name``."""
    parameters = TOOL_ARGS[name].model_json_schema()
    parameters.pop("title", None)
    for field in parameters.get("properties", {}).values():
        field.pop("title", None)
        if field.get("default", ...) is None:  # optional: say "string", not "string or null"
            field.pop("default")
            field.update(next((option for option in field.pop("anyOf", []) if option.get("type") != "null"), {}))
    return {
        "type": "function",
        "function": {"name": name, "description": _DESCRIPTIONS[name], "parameters": parameters},
    }


def tools_for(task_type: TaskType) -> list[dict[str, Any]]:
    """Tool schemas for a task of ``task_type``.

    Raises:
        KeyError: no runtime for this task type exists yet.
    """
    return [tool_schema(name) for name in TOOLS_BY_TYPE[task_type]]
