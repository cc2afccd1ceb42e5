"""An async OpenAI-compatible chat client: retries with backoff, a concurrency limit, a
response cache, token usage, and every attempt's request and response kept for the record."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from pydantic import BaseModel, Field

from runtimes.core import LLMAttempt, LLMError, TokenUsage, redact
from runtimes.llm._cache import ResponseCache, request_key
from runtimes.llm._config import LLMEndpoint


class LLMResponse(BaseModel):
    message: dict[str, Any]
    usage: TokenUsage = Field(default_factory=TokenUsage)
    request: dict[str, Any]
    response: dict[str, Any]
    attempts: list[LLMAttempt]
    cached: bool = False


class LLMClient:
    """Chat completions against one endpoint.

    Args:
        endpoint: where to send requests (see :class:`~runtimes.llm.LLMConfig`).
        max_concurrency: requests in flight at once, across all tasks sharing the client.
        max_attempts: tries per request for 429, 5xx, timeouts and connection errors.
        timeout: seconds per HTTP call.
        backoff_base: first retry delay in seconds; doubled each retry, with jitter, capped at
            ``backoff_cap``; a server's Retry-After wins when it is shorter than the cap.
        cache: answers identical requests without calling the endpoint.
    """

    def __init__(
        self,
        endpoint: LLMEndpoint,
        *,
        max_concurrency: int = 16,
        max_attempts: int = 5,
        timeout: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        cache: ResponseCache | None = None,
    ) -> None:
        import openai  # the SDK loads with the first client: runs without a model never pay its 0.4 s

        self.endpoint = endpoint
        self._retryable = (
            openai.RateLimitError,
            openai.InternalServerError,
            openai.APITimeoutError,
            openai.APIConnectionError,
        )
        self._refused = openai.APIStatusError
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url, api_key=endpoint.api_key or "none", max_retries=0, timeout=timeout
        )
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._cache = cache
        self.http_calls = 0

    async def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> LLMResponse:
        """Ask for the next assistant message.

        Raises:
            LLMError: every attempt failed, or the request was refused (4xx other than 429).
        """
        request: dict[str, Any] = {"model": self.endpoint.model, "messages": messages, "temperature": temperature}
        if tools:
            request["tools"] = tools
        if max_tokens is not None:
            request["max_tokens"] = max_tokens
        if response_format is not None:
            request["response_format"] = response_format
        key = request_key(request)
        if self._cache is not None and (hit := self._cache.get(key)) is not None:
            return _response(request, hit, [LLMAttempt(attempt=0, cached=True)], cached=True)

        attempts: list[LLMAttempt] = []
        for attempt in range(1, self._max_attempts + 1):
            started = time.monotonic()
            try:
                async with self._limit:
                    self.http_calls += 1
                    completion = await self._client.chat.completions.create(**request)
            except self._retryable as exc:
                attempts.append(_failed(attempt, exc, started))
                if attempt == self._max_attempts:
                    raise LLMError(_give_up(self.endpoint, attempts), attempts) from exc
                await asyncio.sleep(self._delay(attempt, exc))
                continue
            except self._refused as exc:
                attempts.append(_failed(attempt, exc, started))
                refused = f"{self.endpoint.provider} refused the request: HTTP {exc.status_code}: {redact(exc.message)}"
                raise LLMError(refused, attempts) from exc
            attempts.append(LLMAttempt(attempt=attempt, status=200, duration=time.monotonic() - started))
            body = completion.model_dump(mode="json", exclude_none=True)
            if not body.get("choices"):
                raise LLMError(f"{self.endpoint.provider} answered without choices")
            if self._cache is not None:
                self._cache.put(key, body)
            return _response(request, body, attempts, cached=False)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1)) * (0.5 + random.random())
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                delay = min(self._backoff_cap, float(retry_after))
        return float(delay)

    async def aclose(self) -> None:
        await self._client.close()


def _response(
    request: dict[str, Any], body: dict[str, Any], attempts: list[LLMAttempt], *, cached: bool
) -> LLMResponse:
    message = dict(body["choices"][0].get("message") or {})
    message.setdefault("role", "assistant")
    usage = body.get("usage") or {}
    return LLMResponse(
        message={key: value for key, value in message.items() if key in {"role", "content", "tool_calls"}},
        usage=TokenUsage(
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            total_tokens=usage.get("total_tokens", 0),
        ),
        request=request,
        response=body,
        attempts=attempts,
        cached=cached,
    )


def _failed(attempt: int, exc: Exception, started: float) -> LLMAttempt:
    status = getattr(exc, "status_code", None)
    return LLMAttempt(
        attempt=attempt,
        status=status,
        error=redact(f"{type(exc).__name__}: {exc}"),
        duration=time.monotonic() - started,
    )


def _give_up(endpoint: LLMEndpoint, attempts: list[LLMAttempt]) -> str:
    return f"{endpoint.provider} at {endpoint.shown_url} failed {len(attempts)} times; last: {attempts[-1].error}"
