"""Which OpenAI-compatible endpoint the ``llm`` policy talks to, and the client that talks to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr

from runtimes.core import ConfigError, redact

if TYPE_CHECKING:
    from runtimes.llm._cache import ResponseCache
    from runtimes.llm._client import LLMClient

HOW_TO_CONFIGURE = (
    "set ADP_LLM_BASE_URL and ADP_LLM_MODEL (and ADP_LLM_API_KEY), or one of GEMINI_API_KEY, "
    "DEEPSEEK_API_KEY, OPENAI_API_KEY, VLLM_URL"
)


class LLMEndpoint(BaseModel):
    provider: str
    base_url: str
    """As configured, credentials included: what the client connects to, never what is shown."""
    model: str
    api_key: str = Field(repr=False)

    @property
    def shown_url(self) -> str:
        """``base_url`` fit to show or store: its user information and secret parameters redacted."""
        return redact(self.base_url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, self.shown_url if name == "base_url" else value


@dataclass(frozen=True)
class _Provider:
    name: str
    default_url: str
    default_model: str


_GEMINI = _Provider("gemini", "https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5-flash")
_DEEPSEEK = _Provider("deepseek", "https://api.deepseek.com/v1", "deepseek-chat")
_OPENAI = _Provider("openai", "https://api.openai.com/v1", "gpt-4o-mini")


class LLMConfig(BaseModel):
    """The ``llm`` policy's model and client, from Settings (the environment or ``./.env``).

    Explicit ``base_url`` + ``model`` (+ ``api_key``) win; otherwise the seeds' priority
    applies: Gemini > DeepSeek > OpenAI > a local vLLM server, each through its
    OpenAI-compatible endpoint. ``model`` overrides any provider's default model.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None
    gemini_api_url: str | None = None
    deepseek_api_key: SecretStr | None = None
    deepseek_api_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_api_base: str | None = None
    vllm_url: str | None = None
    vllm_model: str | None = None
    max_concurrency: int = 16
    max_attempts: int = 5
    backoff_base: float = 0.5

    def __repr_args__(self) -> Any:
        # URLs may carry credentials (``user:pass@``, ``?api_key=``); keys are SecretStr already.
        for name, value in super().__repr_args__():
            is_url = isinstance(value, str) and name is not None and name.endswith(("_url", "_base"))
            yield name, redact(value) if is_url else value

    def endpoint(self) -> LLMEndpoint | None:
        """The endpoint this configures, or None when it configures none.

        Raises:
            ConfigError: ADP_LLM_BASE_URL is set without ADP_LLM_MODEL, or VLLM_URL without a model.
        """
        if self.base_url:
            if not self.model:
                raise ConfigError("ADP_LLM_BASE_URL is set but ADP_LLM_MODEL is not; set the model name to use")
            return LLMEndpoint(
                provider="custom", base_url=self.base_url, model=self.model, api_key=_secret(self.api_key)
            )
        for provider, key, url in (
            (_GEMINI, self.gemini_api_key, self.gemini_api_url),
            (_DEEPSEEK, self.deepseek_api_key, self.deepseek_api_url),
            (_OPENAI, self.openai_api_key, self.openai_api_base),
        ):
            if _secret(key):
                return LLMEndpoint(
                    provider=provider.name,
                    base_url=url or provider.default_url,
                    model=self.model or provider.default_model,
                    api_key=_secret(key),
                )
        if self.vllm_url:
            model = self.model or self.vllm_model
            if not model:
                raise ConfigError("VLLM_URL is set but no model is; set ADP_LLM_MODEL to the model vLLM serves")
            return LLMEndpoint(
                provider="vllm", base_url=self.vllm_url.rstrip("/") + "/v1", model=model, api_key="EMPTY"
            )
        return None

    def client(self, endpoint: LLMEndpoint, cache: ResponseCache | None = None) -> LLMClient:
        """The one client factory: local runs and `adp worker` build their clients here."""
        from runtimes.llm._client import LLMClient  # the openai SDK: only when a client is built

        return LLMClient(
            endpoint,
            max_concurrency=self.max_concurrency,
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base,
            cache=cache,
        )


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""
