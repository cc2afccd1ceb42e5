"""The one agent loop for every task type (the type decides the tools), the tools' argument
models, the verifiers, and the batch runner that gives every task exactly one trajectory."""

from runtimes.agent._loop import AgentLimits, run_task
from runtimes.agent._runner import run_tasks, stream_tasks
from runtimes.agent._tools import (
    TOOL_ARGS,
    TOOLS_BY_TYPE,
    CompleteTaskArgs,
    PythonExecutorArgs,
    tool_schema,
    tools_for,
)
from runtimes.agent._verify import normalise_answer, verify_task

__all__ = [
    "TOOLS_BY_TYPE",
    "TOOL_ARGS",
    "AgentLimits",
    "CompleteTaskArgs",
    "PythonExecutorArgs",
    "normalise_answer",
    "run_task",
    "run_tasks",
    "stream_tasks",
    "tool_schema",
    "tools_for",
    "verify_task",
]
