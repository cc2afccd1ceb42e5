"""The reasoning runtime: the one agent loop (``runtimes.agent``) with both tool sets, the
browser and ``python_executor``, plus ``complete_task`` (``runtimes.tools.TOOLS_BY_TYPE``).

It has no code of its own on purpose: a reasoning task differs from a web or code task only
in the tools it is given, so the loop, the recording and the verifiers are shared.
"""

from runtimes.protocol import TaskType
from runtimes.tools import TOOLS_BY_TYPE

REASONING_TOOLS = TOOLS_BY_TYPE[TaskType.REASONING]

__all__ = ["REASONING_TOOLS"]
