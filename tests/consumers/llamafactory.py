"""A sharegpt row as LLaMA-Factory loads it for supervised fine-tuning, run through LLaMA-Factory's
own code.

That code is the ``llamafactory`` wheel pinned in :mod:`tests.consumers.catalog`, unpacked by
``make setup`` into ``tests/consumers/upstream/`` and imported from there; none of it is in this
repository (tests/consumers/README.md). :func:`check_sharegpt` takes one row through:

1. ``llamafactory.data.parser.get_dataset_list``: the dataset description a user writes in
   ``dataset_info.json`` (by default the one docs/pipeline.md gives, :data:`ADP_DATASET_INFO`),
   made a ``DatasetAttr``;
2. ``llamafactory.data.converter.get_dataset_converter``: the ``SharegptDatasetConverter``
   LLaMA-Factory maps over the file, which aligns the row into prompt and response turns, or logs
   why it refuses the row and returns it empty;
3. ``llamafactory.data.processor.supervised.SupervisedDatasetProcessor.preprocess_dataset``, which
   drops a row without a trainable shape (logging why) and encodes the others with a chat template
   of ``llamafactory.data.template.TEMPLATES``: every turn through the template's formatters, a
   ``function_call`` value through its ``FunctionFormatter`` (the ``function_formatter`` of its
   tool format in ``llamafactory.data.tool_utils.TOOLS``), the ``tools`` text through its
   ``ToolFormatter`` (that tool format's ``tool_formatter``). This runs once for each template of
   :func:`checked_templates`, which between them use every tool format of ``TOOLS``.

LLaMA-Factory trains on without a row it refuses, and stops the whole ``dataset.map`` on an
exception; either is a ``ValueError`` here, carrying LLaMA-Factory's own warning or exception text.
Nothing here restates its rules: the verdict is read from what its code returns, logs or raises.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tests.consumers import fetch
from tests.consumers.catalog import LLAMAFACTORY, UPSTREAM
from tests.pinned import needs

__all__ = ["ADP_DATASET_INFO", "Owner", "check_sharegpt", "checked_templates", "owner", "refusals"]

# The dataset_info.json entry docs/pipeline.md tells a LLaMA-Factory user to write for an adp
# sharegpt export (file_name aside); the tags are LLaMA-Factory's defaults.
ADP_DATASET_INFO: dict[str, Any] = {
    "formatting": "sharegpt",
    "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
}

# Packages whose __init__ imports the trainer (torch, peft, ...): made bare modules whose __path__
# is the unpacked folder, so importing one of their modules runs that module and its imports only.
_BARE_PACKAGES = (
    "llamafactory",
    "llamafactory.data",
    "llamafactory.data.processor",
    "llamafactory.extras",
    "llamafactory.hparams",
)


class _StandIn:
    """A module attribute that exists so an import succeeds, and raises if anything uses it."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._what} is a stand-in (tests/consumers/llamafactory.py) and was called")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends probe for optional hooks
            raise AttributeError(name)
        raise RuntimeError(f"{self._what} is a stand-in (tests/consumers/llamafactory.py); {name} was used")


def _get_mm_plugin(name: str, **kwargs: Any) -> _StandIn:
    return _StandIn(f"LLaMA-Factory's multimodal plugin {name!r}")


def _stub(name: str, **attributes: Any) -> ModuleType:
    module = ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


@dataclass(frozen=True)
class Owner:
    """The pieces of LLaMA-Factory the checks call (its modules, as loaded from the wheel)."""

    get_dataset_list: Callable[..., Any]
    get_dataset_converter: Callable[..., Any]
    DataArguments: type[Any]
    TEMPLATES: dict[str, Any]
    TOOLS: dict[str, Any]
    FunctionFormatter: type[Any]
    ToolFormatter: type[Any]
    Processor: type[Any]  # SupervisedDatasetProcessor less its multimodal step (see _load)


@functools.cache
def owner() -> Owner:
    """LLaMA-Factory's modules, imported once from the unpacked wheel; skips the test (fails it
    under CI) when ``make setup`` has not put the wheel's package there."""
    absent = fetch.missing()
    needs(not absent, f"{', '.join(w.requirement for w in absent)} not unpacked into {UPSTREAM}")
    return _load()


def _load() -> Owner:
    root = LLAMAFACTORY.root / LLAMAFACTORY.package
    for name in _BARE_PACKAGES:
        if name not in sys.modules:
            _stub(name, __path__=[str(root.joinpath(*name.split(".")[1:]))])

    # Stand-ins, each for a module that imports torch (not installed; the trainer needs it, the
    # data loading does not), each providing only the names the loaded modules import from it:
    # - llamafactory.extras.misc: parser.py imports use_modelscope / use_openmind, which
    #   get_dataset_list calls only for a dataset without a local file (the one here names a file).
    # - llamafactory.data.mm_plugin: template.py calls get_mm_plugin as it registers each template
    #   and stores the plugin; only the processor's multimodal step uses it, and _Processor below
    #   leaves that step out (adp writes no images, videos or audio).
    _stub(
        "llamafactory.extras.misc",
        use_modelscope=_StandIn("llamafactory.extras.misc.use_modelscope"),
        use_openmind=_StandIn("llamafactory.extras.misc.use_openmind"),
    )
    _stub("llamafactory.data.mm_plugin", get_mm_plugin=_get_mm_plugin)
    # constants.py takes two adapter file names from peft.utils (peft needs torch); no loaded code
    # reads them. peft is stood in for while constants.py runs, and removed at once, so nothing
    # else in the process sees a peft.
    import transformers.utils  # noqa: F401  (imported before peft is stood in for: it probes for peft)

    _stub("peft", utils=_stub("peft.utils", SAFETENSORS_WEIGHTS_NAME="", WEIGHTS_NAME=""))
    try:
        importlib.import_module("llamafactory.extras.constants")
    finally:
        del sys.modules["peft"], sys.modules["peft.utils"]

    parser = importlib.import_module("llamafactory.data.parser")
    converter = importlib.import_module("llamafactory.data.converter")
    formatter = importlib.import_module("llamafactory.data.formatter")
    template = importlib.import_module("llamafactory.data.template")
    tool_utils = importlib.import_module("llamafactory.data.tool_utils")
    supervised = importlib.import_module("llamafactory.data.processor.supervised")
    data_args = importlib.import_module("llamafactory.hparams.data_args")

    class _Processor(supervised.SupervisedDatasetProcessor):  # type: ignore[name-defined,misc]
        """The supervised processor with its own row test (``preprocess_dataset``), a kept row
        encoded by the template as ``_encode_data_example`` does, less the multimodal plugin's
        steps (needs torch; a row without media passes them unchanged) and the cut to
        ``cutoff_len`` (which shortens a row, never refuses it)."""

        def _encode_data_example(
            self, prompt: list[dict[str, str]], response: list[dict[str, str]], system: str | None,
            tools: str | None, images: list[Any], videos: list[Any], audios: list[Any],
        ) -> tuple[list[int], list[int]]:  # fmt: skip
            if images or videos or audios:
                raise ValueError("the row names media, which adp never writes")
            pairs = self.template.encode_multiturn(self.tokenizer, prompt + response, system, tools)
            ids = [token for source, target in pairs for token in source + target]
            return ids, ids

    return Owner(
        get_dataset_list=parser.get_dataset_list,
        get_dataset_converter=converter.get_dataset_converter,
        DataArguments=data_args.DataArguments,
        TEMPLATES=template.TEMPLATES,
        TOOLS=tool_utils.TOOLS,
        FunctionFormatter=formatter.FunctionFormatter,
        ToolFormatter=formatter.ToolFormatter,
        Processor=_Processor,
    )


@functools.cache
def checked_templates() -> tuple[str, ...]:
    """The templates each row is encoded with: one of every kind in LLaMA-Factory's registry (the
    tool format of its function formatter and of its tool formatter, and its template class): the
    first registered whose name starts with its tool format (``qwen3`` rather than ``keye_vl``),
    else the first registered. Together they use every tool format of ``tool_utils.TOOLS``."""
    chosen: dict[tuple[str | None, str | None, str], str] = {}
    named = [(name, _kind(template)) for name, template in owner().TEMPLATES.items()]
    for name, kind in named:
        if name.startswith(str(kind[0])):
            chosen.setdefault(kind, name)
    for name, kind in named:
        chosen.setdefault(kind, name)
    return tuple(sorted(chosen.values()))


def _kind(template: Any) -> tuple[str | None, str | None, str]:
    return (
        getattr(template.format_function, "tool_format", None),
        getattr(template.format_tools, "tool_format", None),
        type(template).__name__,
    )


@functools.cache
def _tokenizer() -> Any:
    """A tokenizer built here, no download: byte-level BPE over the 256 byte symbols, so any text
    encodes. The templates need one to encode with; the ids themselves are not what is checked."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=256, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([""], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)  # type: ignore[no-untyped-call]  # transformers: untyped


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """What LLaMA-Factory's loggers warn while the block runs (its library logger, "llamafactory",
    does not propagate to the root logger)."""
    said = _Said()
    library = logging.getLogger("llamafactory")
    library.addHandler(said)
    try:
        yield said.messages
    finally:
        library.removeHandler(said)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run(what: str, step: Callable[..., Any], *args: Any) -> Any:
    try:
        return step(*args)
    except Exception as err:  # whatever LLaMA-Factory's code raises stops its dataset.map
        raise ValueError(
            f"LLaMA-Factory's {what} raises {type(err).__name__}: {_short(str(err))} "
            "(its dataset.map stops there, for the whole file)"
        ) from err


def check_sharegpt(
    example: dict[str, Any],
    dataset_info: dict[str, Any] = ADP_DATASET_INFO,
    templates: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The aligned turns LLaMA-Factory trains on for one sharegpt row (``role``: user, assistant,
    function, observation; ``content``), the system turn aside.

    ``dataset_info`` is the row's dataset description in ``dataset_info.json`` (``file_name``
    aside); ``templates`` the chat templates to encode it with (default: :func:`checked_templates`).

    Raises:
        ValueError: LLaMA-Factory would leave the row out of training (its warnings, quoted), or
            its code raises on the row (which stops its loading of the file).
    """
    lf = owner()
    (dataset_attr,) = lf.get_dataset_list(["adp"], {"adp": {"file_name": "adp.jsonl", **dataset_info}})
    data_args = lf.DataArguments()
    converter = lf.get_dataset_converter(dataset_attr.formatting, dataset_attr, data_args)
    with _warnings() as said:
        aligned = _run(type(converter).__name__, converter, example)
        batch = {column: [value] for column, value in aligned.items()}
        for name in templates if templates is not None else checked_templates():
            processor = lf.Processor(
                template=lf.TEMPLATES[name], tokenizer=_tokenizer(), processor=None, data_args=data_args
            )
            encoded = _run(f"{name!r} template", processor.preprocess_dataset, batch)
            if not encoded["input_ids"]:
                raise ValueError(
                    "LLaMA-Factory leaves this row out of training: " + " | ".join(_short(m) for m in said)
                )
    turns: list[dict[str, Any]] = aligned["_prompt"] + aligned["_response"]
    return turns


def refusals(
    example: dict[str, Any], dataset_info: dict[str, Any] = ADP_DATASET_INFO, templates: Sequence[str] | None = None
) -> dict[str, str]:
    """Per template that cannot load ``example`` (default: each of :func:`checked_templates`),
    LLaMA-Factory's reason as :func:`check_sharegpt` words it; empty when every one loads it. For
    rows some templates refuse by design (GLM-4's tool format takes one call per turn)."""
    refused: dict[str, str] = {}
    for name in templates if templates is not None else checked_templates():
        try:
            check_sharegpt(example, dataset_info, [name])
        except ValueError as err:
            refused[name] = str(err)
    return refused
