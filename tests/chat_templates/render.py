"""Render every exported record through every catalogued chat template, as a trainer does, and check
what each rendering holds.

A trainer loads the file with ``datasets.load_dataset`` and calls
``tokenizer.apply_chat_template(record["messages"], tools=record["tools"])``. This module does the
same with a tokenizer built here (a tiny byte-level BPE trained on the template's own text, its
control tokens added whole: no download), with ``tokenize=False`` and ``True``, and checks each
record:

- every tool call is written the way its template writes one, name and arguments together, the
  arguments as a JSON object (a double-encoded string cannot match);
- every tool result appears, in its template's form (with its call id where the template shows one);
- every tool schema appears as the template renders it (tools handed over as JSON text cannot);
- nothing renders ``None`` (or ``null``, or a JSON string holding an object) more often than the
  record's own text holds it;
- ``tokenize=True`` gives a non-empty list of ids that is the tokenization of the text, control
  tokens one id each, and decodes back to the text;
- a record renders to the same text from every file kind (JSONL, Parquet; OpenAI lines once their
  arguments are decoded).

A template that refuses a record fails the check, unless the record has a shape the template
documents it cannot render (``ChatTemplate.refuses``) and the template says exactly that.

Importable (the transformers 5.x test calls :func:`check_exports` in process) and runnable as a
script over a directory of exported files, for the transformers 4.x venv:
``python -m tests.chat_templates.render EXPORT_DIR`` prints the counts and exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests.chat_templates.catalog import TEMPLATES, ChatTemplate

# The files of an export directory that are rendered, and the `datasets` builder for each.
FILES = {"trl.jsonl": "json", "trl.parquet": "parquet", "openai.jsonl": "json"}
REQUIRED = ("trl.jsonl", "trl.parquet")
# Text a template writes where a value is missing or was encoded twice.
MARKERS = ("None", "null", '"{\\"')


@functools.cache
def tokenizer_for(template: ChatTemplate) -> PreTrainedTokenizerFast:
    """A tokenizer for ``template``, built here: byte-level BPE (any text encodes, and decodes back
    exactly) trained on the template's text, with its bos, eos and control tokens as special
    tokens, and the template as its ``chat_template``. Built once per template and process."""
    text = template.path.read_text(encoding="utf-8")
    special = [token for token in (template.bos, template.eos, *template.control) if token]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([text, '{"name": "f", "arguments": {"code": "print(1)"}}'], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=template.bos, eos_token=template.eos, chat_template=text
    )


def from_openai(record: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI fine-tuning line as Hugging Face templates take a conversation: each call's
    arguments decoded from their JSON text (the templates want objects), and an assistant turn that
    only calls tools given ``content: ""`` (OpenAI's format leaves the key out; Qwen3's release
    template and QwQ's read it)."""
    messages = []
    for message in record["messages"]:
        if message.get("tool_calls"):
            message = {"content": "", **message, "tool_calls": [_decoded(call) for call in message["tool_calls"]]}
        messages.append(message)
    return {**record, "messages": messages}


def _decoded(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call["function"]["arguments"]
    decoded = json.loads(arguments) if isinstance(arguments, str) else arguments
    return {**call, "function": {**call["function"], "arguments": decoded}}


def load(path: Path, cache_dir: Path) -> list[dict[str, Any]]:
    """The records of an exported file as ``datasets`` gives them to a trainer."""
    dataset = datasets.load_dataset(FILES[path.name], data_files=str(path), split="train", cache_dir=str(cache_dir))
    records = [dict(row) for row in dataset]
    return [from_openai(record) for record in records] if path.name.startswith("openai") else records


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class Refused(Exception):
    """The template refused a record whose shape it documents it cannot render."""


def check_record(template: ChatTemplate, record: dict[str, Any]) -> tuple[str, list[str]]:
    """Render ``record`` through ``template`` and check the rendering.

    Returns:
        The rendered text and the problems found (empty when the record passes).

    Raises:
        Refused: the template refused the record, as it documents for that shape.
    """
    tokenizer = tokenizer_for(template)
    messages, tools = record["messages"], record["tools"]
    expected_refusal = template.refuses(messages)
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
    except Exception as error:  # a template raises TemplateError, TypeError, UndefinedError...
        if expected_refusal and expected_refusal in str(error):
            raise Refused(expected_refusal) from error
        return "", [f"refused: {type(error).__name__}: {error}"]
    if expected_refusal:
        return text, [f"rendered a shape it documents it refuses ({expected_refusal})"]
    assert isinstance(text, str)
    problems: list[str] = []
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        problems.append(f"tools are {type(tools).__name__}, not a list of objects")
        tools = []

    # What the template writes for each call, result and tool, and how often the record's own text
    # already holds it (so a coincidence in a user message is not counted against the template).
    functions = [tool.get("function") or {} for tool in tools]
    schemas = {function.get("name"): function.get("parameters") or {} for function in functions}
    own = [*_strings(messages), *_strings(tools)]
    wanted: Counter[str] = Counter()
    for message in messages:
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            if not isinstance(arguments, dict):
                problems.append(f"call {call['id']}: arguments are {type(arguments).__name__}, not an object")
                continue
            problems.extend(
                f"call {call['id']}: {misfit}" for misfit in _misfits(arguments, call["function"]["name"], schemas)
            )
            wanted[template.call(call["id"], call["function"]["name"], json.dumps(arguments, ensure_ascii=False))] += 1
        if message["role"] == "tool":
            content = message.get("content")
            if not isinstance(content, str):
                problems.append(f"result for {message.get('tool_call_id')}: content is {type(content).__name__}")
                continue
            wanted[template.result(message["tool_call_id"], content)] += 1
    for tool in tools:
        try:
            wanted[template.tool(tool)] += 1
        except (KeyError, TypeError) as error:
            problems.append(f"a tool without its function's name or parameters ({error!r})")
    for snippet, times in wanted.items():
        found = text.count(snippet) - sum(string.count(snippet) for string in own)
        if found != times:
            problems.append(f"expected {_short(snippet)!r} {times} times, found it {found} times")
    written = "".join(wanted)  # the template's own renderings of the record's values may hold a marker
    for marker in MARKERS:
        allowed = sum(string.count(marker) for string in own) + written.count(marker)
        if text.count(marker) > allowed:
            problems.append(
                f"renders {marker!r} {text.count(marker)} times, the record's values hold it {allowed} times"
            )

    ids = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)
    if not isinstance(ids, list) or not ids or set(map(type, ids)) != {int}:
        problems.append(f"tokenize=True gave {type(ids).__name__} {str(ids)[:80]}, not a non-empty list of ids")
    else:
        # Byte-level BPE decodes exactly: equal text means the ids are this rendering's tokens.
        if tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) != text:
            problems.append("tokenize=True gave ids that do not decode to the rendered text")
        counts = Counter(ids)
        for token in (template.bos, template.eos, *template.control):
            if token and counts[tokenizer.convert_tokens_to_ids(token)] != text.count(token):
                problems.append(f"control token {token!r} is not one id each time")
    return text, problems


def _misfits(arguments: dict[str, Any], name: str, schemas: dict[str, dict[str, Any]]) -> Iterator[str]:
    """How ``arguments`` do not fit the called tool's parameters (what a model trained on them
    would learn to emit): an unknown tool, an undeclared key where the schema forbids extra ones,
    a required key missing, a null where the declared type has none."""
    if name not in schemas:
        yield f"calls {name!r}, which is not among the record's tools"
        return
    properties = schemas[name].get("properties") or {}
    if schemas[name].get("additionalProperties") is False:
        yield from (f"argument {key!r} is not a parameter of {name}" for key in arguments if key not in properties)
    yield from (
        f"required argument {key!r} missing" for key in schemas[name].get("required") or [] if key not in arguments
    )
    for key, value in arguments.items():
        declared = (properties.get(key) or {}).get("type")
        if (
            value is None
            and declared is not None
            and "null" not in (declared if isinstance(declared, list) else [declared])
        ):
            yield f"argument {key!r} is null, its type is {declared!r}"


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "…" + text[-19:]


@dataclass
class Report:
    """Counts per (template, file): records rendered and passed, refused as documented; the
    problems found, grouped by their text with the number of records and a first task id."""

    rendered: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    problems: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, template: str, file: str, problem: str, record: str) -> None:
        self.problems.setdefault((template, file, problem), []).append(record)

    def as_json(self) -> dict[str, Any]:
        return {
            "transformers": transformers.__version__,
            "rendered": {f"{t}|{f}": n for (t, f), n in self.rendered.items()},
            "refused": {f"{t}|{f}": n for (t, f), n in self.refused.items()},
            "problems": [
                {"template": t, "file": f, "problem": p, "records": rs} for (t, f, p), rs in self.problems.items()
            ],
        }

    def table(self) -> str:
        files = sorted({file for _, file in self.rendered | self.refused} | {file for _, file, _ in self.problems})
        lines = [
            f"chat templates x exported files, transformers {transformers.__version__}: records rendered and checked"
        ]
        lines.append(f"{'template':<16}" + "".join(f"{file:>16}" for file in files))
        for template in TEMPLATES:
            cells = []
            for file in files:
                failed = len(
                    {r for (t, f, _), rs in self.problems.items() if (t, f) == (template.name, file) for r in rs}
                )
                cell = str(self.rendered[template.name, file])
                cell += f" (+{self.refused[template.name, file]} refused)" if self.refused[template.name, file] else ""
                cell += f" ({failed} FAILED)" if failed else ""
                cells.append(f"{cell:>16}")
            lines.append(f"{template.name:<16}" + "".join(cells))
        for (template_name, file, problem), records in sorted(self.problems.items()):
            lines.append(f"FAIL {template_name} {file}: {len(records)} records, e.g. {records[0]}: {problem}")
        lines.append(f"{sum(self.rendered.values())} renderings checked in {self.seconds:.1f} s")
        return "\n".join(lines)


def _key(record: dict[str, Any], index: int) -> str:
    return str(record.get("task_id") or f"record {index}")


def check_exports(directory: Path, cache_dir: Path) -> Report:
    """Render every record of every known file in ``directory`` through every template.

    Raises:
        FileNotFoundError: a template is not fetched, or the trl JSONL or Parquet file is missing.
    """
    started = time.perf_counter()
    for template in TEMPLATES:
        if not template.path.is_file():
            raise FileNotFoundError(f"{template.path}: not fetched (python -m tests.chat_templates.fetch)")
    for name in REQUIRED:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: no such export")
    report = Report()
    loaded: dict[str, list[dict[str, Any]]] = {}
    for name in FILES:
        if (directory / name).is_file():
            try:
                loaded[name] = load(directory / name, cache_dir)
            except Exception as error:  # what a trainer would see: the file does not load
                report.add("*", name, f"does not load: {type(error).__name__}: {error}", name)
    if "trl.jsonl" not in loaded:
        report.seconds = time.perf_counter() - started
        return report
    reference = loaded["trl.jsonl"]
    for name, records in loaded.items():
        if len(records) != len(reference):
            report.add("*", name, f"{len(records)} records, trl.jsonl has {len(reference)}", name)
    for template in TEMPLATES:
        texts: dict[str, list[str | None]] = {}
        for name, records in loaded.items():
            texts[name] = []
            for index, record in enumerate(records):
                key = _key(reference[index] if index < len(reference) else record, index)
                try:
                    text, problems = check_record(template, record)
                except Refused:
                    report.refused[template.name, name] += 1
                    texts[name].append(None)
                    continue
                for problem in problems:
                    report.add(template.name, name, problem, key)
                if not problems:
                    report.rendered[template.name, name] += 1
                texts[name].append(text or None)
        # One record, one rendering, whichever file it came from.
        for name, rendered in texts.items():
            for index, (text, same) in enumerate(zip(rendered, texts["trl.jsonl"], strict=False)):
                if text is not None and same is not None and text != same:
                    report.add(
                        template.name,
                        name,
                        "renders differently from the same record in trl.jsonl",
                        _key(reference[index], index),
                    )
    report.seconds = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="a directory with trl.jsonl, trl.parquet (and openai.jsonl)")
    parser.add_argument("--report", type=Path, help="also write the counts and problems here, as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        report = check_exports(args.directory, Path(cache))
    print(report.table())
    if args.report:
        args.report.write_text(json.dumps(report.as_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
