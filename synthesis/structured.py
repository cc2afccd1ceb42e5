"""Ask a model for one JSON object of a pydantic model's shape: the schema in the prompt and in
``response_format`` (json_schema, for the providers that honour it), the answer validated, an
invalid answer shown back to the model with the error, up to a number of answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar

from pydantic import BaseModel

from runtimes.core import StructuredAnswerError, TokenUsage, strict_json
from runtimes.llm import LLMClient

DEFAULT_ATTEMPTS = 3
Answer = TypeVar("Answer", bound=BaseModel)


def system_prompt(instructions: str, shape: type[BaseModel]) -> tuple[str, str]:
    """The system message (instructions + the JSON schema) and its hash, which names the prompt's version."""
    text = f"{instructions}\nAnswer with one JSON object and nothing else, matching this JSON schema:\n"
    text += json.dumps(shape.model_json_schema(), sort_keys=True)
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


async def ask(
    client: LLMClient,
    system: str,
    user: str,
    shape: type[Answer],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    usage: TokenUsage | None = None,
) -> Answer:
    """The model's answer to ``user`` as a validated ``shape``; the tokens it spent (cached
    answers cost none) are added to ``usage`` when given, whether or not an answer is valid.

    Raises:
        StructuredAnswerError: no valid answer within ``attempts``.
        LLMError: the model could not be asked.
    """
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": shape.__name__, "schema": shape.model_json_schema()},
    }
    problem = "no answer"
    for _ in range(attempts):
        answer = await client.chat(messages, response_format=response_format)
        if usage is not None and not answer.cached:
            usage.prompt_tokens += answer.usage.prompt_tokens
            usage.completion_tokens += answer.usage.completion_tokens
            usage.total_tokens += answer.usage.total_tokens
        content = answer.message.get("content") or ""
        text = _json_object(content)
        try:
            valid = shape.model_validate_json(text)
            # pydantic reads NaN, Infinity and 1e999 as floats: in a free-form field they would be
            # written as null, the task changed without a word. Such an answer is not valid.
            strict_json(text)
            return valid
        except ValueError as exc:  # pydantic's ValidationError, or strict_json's json.JSONDecodeError
            problem = str(exc).splitlines()[0] if str(exc) else "invalid JSON"
            messages += [
                {"role": "assistant", "content": content},
                {"role": "user", "content": f"That is not a valid answer ({exc}). Answer with the JSON object only."},
            ]
    raise StructuredAnswerError(f"no valid answer in {attempts}: {problem}")


def _json_object(content: str) -> str:
    """The JSON object in ``content``; models without JSON mode sometimes fence it in Markdown."""
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    return text
