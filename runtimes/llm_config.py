"""Which OpenAI-compatible endpoint the ``llm`` policy talks to.

Explicit ``ADP_LLM_BASE_URL`` + ``ADP_LLM_MODEL`` (+ ``ADP_LLM_API_KEY``) win; otherwise the
seeds' priority applies: Gemini > DeepSeek > OpenAI > a local vLLM server, each through its
OpenAI-compatible endpoint. ``ADP_LLM_MODEL`` overrides any provider's default model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field

from runtimes.errors import ConfigError

HOW_TO_CONFIGURE = (
    "set ADP_LLM_BASE_URL and ADP_LLM_MODEL (and ADP_LLM_API_KEY), or one of GEMINI_API_KEY, "
    "DEEPSEEK_API_KEY, OPENAI_API_KEY, VLLM_URL"
)


class LLMEndpoint(BaseModel):
    provider: str
    base_url: str
    model: str
    api_key: str = Field(repr=False)


@dataclass(frozen=True)
class _Provider:
    name: str
    key_var: str
    url_var: str
    default_url: str
    default_model: str


_PROVIDERS = (
    _Provider(
        "gemini",
        "GEMINI_API_KEY",
        "GEMINI_API_URL",
        "https://generativelanguage.googleapis.com/v1beta/openai/",
        "gemini-2.5-flash",
    ),
    _Provider("deepseek", "DEEPSEEK_API_KEY", "DEEPSEEK_API_URL", "https://api.deepseek.com/v1", "deepseek-chat"),
    _Provider("openai", "OPENAI_API_KEY", "OPENAI_API_BASE", "https://api.openai.com/v1", "gpt-4o-mini"),
)


def resolve_llm_endpoint(env: Mapping[str, str]) -> LLMEndpoint | None:
    """The endpoint ``env`` configures, or None when it configures none.

    Raises:
        ConfigError: ADP_LLM_BASE_URL is set without ADP_LLM_MODEL, or VLLM_URL without a model.
    """
    model_override = env.get("ADP_LLM_MODEL") or None
    if base_url := env.get("ADP_LLM_BASE_URL"):
        if not model_override:
            raise ConfigError("ADP_LLM_BASE_URL is set but ADP_LLM_MODEL is not; set the model name to use")
        return LLMEndpoint(
            provider="custom", base_url=base_url, model=model_override, api_key=env.get("ADP_LLM_API_KEY", "")
        )
    for provider in _PROVIDERS:
        if api_key := env.get(provider.key_var):
            return LLMEndpoint(
                provider=provider.name,
                base_url=env.get(provider.url_var) or provider.default_url,
                model=model_override or provider.default_model,
                api_key=api_key,
            )
    if vllm_url := env.get("VLLM_URL"):
        model = model_override or env.get("VLLM_MODEL")
        if not model:
            raise ConfigError("VLLM_URL is set but no model is; set ADP_LLM_MODEL to the model vLLM serves")
        return LLMEndpoint(provider="vllm", base_url=vllm_url.rstrip("/") + "/v1", model=model, api_key="EMPTY")
    return None
