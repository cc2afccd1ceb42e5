"""Test tooling, for tests, benchmarks and the offline demo: the scripted OpenAI-compatible HTTP
server behind the ``mock`` policy, real services on free ports, and waiting on a condition.
Production code loads this package only when the ``mock`` policy is chosen."""

from runtimes.testing._mock_llm import MockLLMServer, MockScript, MockStats, ScriptedCall, ScriptedTurn, ScriptRule
from runtimes.testing._services import RedisServer, free_port, http_ok, wait_for

__all__ = [
    "MockLLMServer",
    "MockScript",
    "MockStats",
    "RedisServer",
    "ScriptRule",
    "ScriptedCall",
    "ScriptedTurn",
    "free_port",
    "http_ok",
    "wait_for",
]
