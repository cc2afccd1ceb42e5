"""The LLM client's error handling and cache, against the mock server over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adp_pipeline.storage.rows import trajectory_row
from runtimes.core import LLMAttempt, LLMCall, LLMError, TaskType, Trajectory
from runtimes.llm import FileResponseCache, LLMClient, LLMEndpoint, LLMResponse, request_key
from runtimes.scale import WorkerMetrics
from runtimes.settings import Settings
from runtimes.testing import MockLLMServer, MockScript
from tests.helpers import ADP, clean_env

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


PROVIDER_VARIABLES = (
    "ADP_LLM_BASE_URL", "ADP_LLM_MODEL", "ADP_LLM_API_KEY", "GEMINI_API_KEY", "GEMINI_API_URL", "DEEPSEEK_API_KEY",
    "DEEPSEEK_API_URL", "OPENAI_API_KEY", "OPENAI_API_BASE", "VLLM_URL", "VLLM_MODEL",
)  # fmt: skip


def endpoint(monkeypatch: pytest.MonkeyPatch, **env: str) -> LLMEndpoint | None:
    """The endpoint Settings resolve from exactly ``env`` (no .env file)."""
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None).llm_config.endpoint()  # type: ignore[call-arg]


def test_provider_priority_follows_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OPENAI_API_KEY": "o", "DEEPSEEK_API_KEY": "d", "GEMINI_API_KEY": "g", "VLLM_URL": "http://v:8000"}
    assert endpoint(monkeypatch, **env).provider == "gemini"  # type: ignore[union-attr]
    assert endpoint(monkeypatch, **{**env, "GEMINI_API_KEY": ""}).provider == "deepseek"  # type: ignore[union-attr]
    openai = endpoint(monkeypatch, OPENAI_API_KEY="o", OPENAI_API_BASE="http://proxy/v1")
    assert openai is not None and (openai.provider, openai.base_url) == ("openai", "http://proxy/v1")
    explicit = endpoint(monkeypatch, **env, ADP_LLM_BASE_URL="http://x/v1", ADP_LLM_MODEL="m")
    assert explicit is not None and (explicit.provider, explicit.model) == ("custom", "m")
    assert endpoint(monkeypatch) is None
    assert "sk" not in repr(endpoint(monkeypatch, OPENAI_API_KEY="sk-secret"))
    assert "sk-secret" not in repr(Settings(_env_file=None))  # type: ignore[call-arg]


def test_provider_keys_are_read_from_dot_env_and_the_environment_wins(tmp_path: Path) -> None:
    # The same settings model reads every variable, provider keys included, from both places.
    (tmp_path / ".env").write_text("GEMINI_API_KEY=from-dotenv\nADP_LLM_MODEL=model-from-dotenv\n")
    env = clean_env(ADP_ENV_FILE=".env")  # this test is about the .env file

    def doctor(**extra: str) -> str:
        done = subprocess.run(
            [ADP, "doctor", "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        return " ".join(done.stdout.split())

    assert "gemini: model-from-dotenv at https://generativelanguage" in doctor()
    assert "deepseek" not in doctor()
    assert "custom: from-env at http://llm.test/v1" in doctor(
        ADP_LLM_BASE_URL="http://llm.test/v1", ADP_LLM_MODEL="from-env"
    )


def test_the_suite_reads_no_dot_env_and_sees_no_model_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A user's .env beside the tests and keys in their shell: neither reaches adp under test.
    (tmp_path / ".env").write_text("GEMINI_API_KEY=from-dotenv\nADP_LLM_MODEL=model-from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    assert Settings().llm_config.endpoint() is None  # in process: conftest set ADP_ENV_FILE empty
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-shell")
    done = subprocess.run(
        [ADP, "doctor", "--data-dir", str(tmp_path / "data")],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = " ".join(done.stdout.split())
    assert "none configured" in output, output
    assert "gemini" not in output and "openai" not in output


def test_the_trajectory_row_and_the_worker_metrics_count_llm_calls_alike() -> None:
    ok, busy, down = (
        LLMAttempt(attempt=1, status=200),
        LLMAttempt(attempt=1, status=429),
        LLMAttempt(attempt=1, status=500),
    )
    calls = [
        LLMCall(cached=True),  # answered by the cache: no request
        LLMCall(attempts=[ok]),  # first try
        LLMCall(attempts=[busy, down, ok]),  # two retries
        LLMCall(attempts=[down, down], failed=True),  # gave up: both requests failed
    ]
    assert [(c.requests, c.retries) for c in calls] == [(0, 0), (1, 0), (3, 2), (2, 2)]
    trajectory = Trajectory(
        task_id="t", task_type=TaskType.CODE, runtime_id="r", success=False, policy="llm", provider="p", llm_calls=calls
    )
    row = trajectory_row(trajectory, datetime.now(UTC))
    metrics = WorkerMetrics()
    metrics.record("code", trajectory)

    def sample(name: str) -> float:
        return metrics.registry.get_sample_value(name, {"provider": "p"} if "llm" in name else {}) or 0.0

    assert (row["llm_calls"], row["llm_retries"], row["llm_cached_calls"]) == (3, 4, 1)
    assert sample("llm_retries_total") == row["llm_retries"]
    assert sample("llm_requests_total") == 6
    assert (sample("cache_hits_total"), sample("cache_misses_total")) == (row["llm_cached_calls"], row["llm_calls"])
