"""The LLM client's error handling and cache, against the mock server over real HTTP."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from runtimes.llm import LLMClient, LLMError, LLMResponse
from runtimes.llm_cache import FileResponseCache, request_key
from runtimes.llm_config import LLMEndpoint, resolve_llm_endpoint
from runtimes.mock_llm import MockLLMServer, MockScript

MESSAGES = [{"role": "user", "content": "hello"}]


def chat(server: MockLLMServer, **client: object) -> LLMResponse:
    async def go() -> LLMResponse:
        endpoint = LLMEndpoint(provider="mock", base_url=server.base_url, model="mock", api_key="x")
        llm = LLMClient(endpoint, backoff_base=0.001, **client)  # type: ignore[arg-type]
        try:
            return await llm.chat(MESSAGES)
        finally:
            await llm.aclose()

    return asyncio.run(go())


def test_a_refused_request_is_not_retried_and_says_why() -> None:
    with MockLLMServer(MockScript()) as server:
        server.refuse_with = 401
        with pytest.raises(LLMError, match="HTTP 401") as error:
            chat(server)
        assert server.stats.requests == 1
    assert [attempt.status for attempt in error.value.attempts] == [401]


def test_retries_give_up_after_max_attempts_with_every_attempt_recorded() -> None:
    with MockLLMServer(MockScript(), error_rate=1.0) as server:
        with pytest.raises(LLMError, match="failed 3 times") as error:
            chat(server, max_attempts=3)
        assert server.stats.requests == 3
    assert [attempt.status for attempt in error.value.attempts] == [429, 500, 429]


def test_the_cache_answers_a_repeated_request_until_its_ttl(tmp_path: Path) -> None:
    cache = FileResponseCache(tmp_path, ttl=3600)
    with MockLLMServer(MockScript()) as server:
        first = chat(server, cache=cache)
        second = chat(server, cache=cache)
        assert server.stats.requests == 1
        assert (first.cached, second.cached) == (False, True)
        assert second.message == first.message
        key = request_key({"model": "mock", "messages": MESSAGES, "temperature": 0.0})
        entry = tmp_path / key[:2] / f"{key}.json"
        assert entry.exists()
        old = time.time() - 7200
        os.utime(entry, (old, old))  # older than the TTL: a miss
        assert chat(server, cache=cache).cached is False
        assert server.stats.requests == 2


def test_provider_priority_follows_the_seeds() -> None:
    env = {"OPENAI_API_KEY": "o", "DEEPSEEK_API_KEY": "d", "GEMINI_API_KEY": "g", "VLLM_URL": "http://v:8000"}
    assert resolve_llm_endpoint(env).provider == "gemini"  # type: ignore[union-attr]
    assert resolve_llm_endpoint({**env, "GEMINI_API_KEY": ""}).provider == "deepseek"  # type: ignore[union-attr]
    openai = resolve_llm_endpoint({"OPENAI_API_KEY": "o", "OPENAI_API_BASE": "http://proxy/v1"})
    assert openai is not None and (openai.provider, openai.base_url) == ("openai", "http://proxy/v1")
    explicit = resolve_llm_endpoint({**env, "ADP_LLM_BASE_URL": "http://x/v1", "ADP_LLM_MODEL": "m"})
    assert explicit is not None and (explicit.provider, explicit.model) == ("custom", "m")
    assert resolve_llm_endpoint({}) is None
    assert "sk" not in repr(resolve_llm_endpoint({"OPENAI_API_KEY": "sk-secret"}))
