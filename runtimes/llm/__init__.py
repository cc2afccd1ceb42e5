"""Talking to a model: the OpenAI-compatible client (retries, usage, a response cache), endpoint
configuration from the environment, and the policies that act in the agent loop."""

from runtimes.llm._cache import FileResponseCache, ResponseCache, request_key
from runtimes.llm._client import LLMClient, LLMResponse
from runtimes.llm._config import HOW_TO_CONFIGURE, LLMConfig, LLMEndpoint
from runtimes.llm._policies import (
    POLICY_NAMES,
    LLMPolicy,
    OraclePolicy,
    Policy,
    PolicyConfig,
    Turn,
    UnconfiguredPolicy,
)

__all__ = [
    "HOW_TO_CONFIGURE",
    "POLICY_NAMES",
    "FileResponseCache",
    "LLMClient",
    "LLMConfig",
    "LLMEndpoint",
    "LLMPolicy",
    "LLMResponse",
    "OraclePolicy",
    "Policy",
    "PolicyConfig",
    "ResponseCache",
    "Turn",
    "UnconfiguredPolicy",
    "request_key",
]
