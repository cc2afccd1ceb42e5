"""Every description the Dagster UI shows reads there as written. The UI renders descriptions as
Markdown with raw HTML allowed, so a placeholder such as ``<data>`` is a tag, and the reader saw
"written to /exports/training_dataset.parquet". Each description of the built definitions (assets,
the dbt models' included, asset checks, jobs and their ops, sensors, schedules) is rendered with a
CommonMark renderer (markdown-it, raw HTML on, GFM tables, strikethrough and autolinks) and must
lose no word: what a person wrote in a description is what they read."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import dagster as dg
from markdown_it import MarkdownIt
from markdown_it.token import Token

from adp_pipeline.builder import build_definitions
from runtimes.settings import Settings

_RENDERER = MarkdownIt("commonmark", {"html": True, "linkify": True}).enable(["table", "strikethrough", "linkify"])
_WORD = re.compile(r"\w+")  # underscores included: `__init__` shown as bold "init" lost two words' worth


def shown_text(markdown: str) -> tuple[str, list[str]]:
    """What a reader sees of ``markdown`` (code as written), and the raw HTML in it, which they don't."""
    shown: list[str] = []
    html: list[str] = []

    def walk(tokens: list[Token]) -> None:
        for token in tokens:
            if token.type in {"html_inline", "html_block"}:
                html.append(token.content.strip())
            elif token.type in {"text", "code_inline", "code_block"}:
                shown.append(token.content)
            elif token.type == "fence":
                shown.append(f"{token.info} {token.content}")
            elif token.type in {"softbreak", "hardbreak"}:
                shown.append(" ")
            if token.children:
                walk(token.children)

    walk(_RENDERER.parse(markdown))
    return " ".join(shown), html


def lost_words(markdown: str) -> list[str]:
    """The words of ``markdown`` a reader does not see (a placeholder taken for a tag, a link's
    target, an entity's name), and the raw HTML that hid them."""
    text, html = shown_text(markdown)
    missing = Counter(_WORD.findall(markdown)) - Counter(_WORD.findall(text))
    return sorted(missing.elements()) + [f"html {tag}" for tag in html]


def descriptions(defs: dg.Definitions) -> Iterator[tuple[str, str]]:
    """(what, description) for everything of ``defs`` the UI describes."""
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        yield f"asset {key.to_user_string()}", graph.get(key).description or ""
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        yield f"check {check_key.name}", spec.description or ""
    for job in defs.resolve_all_job_defs():
        yield f"job {job.name}", job.description or ""
        for node in job.graph.node_defs:
            yield f"op {node.name} of {job.name}", node.description or ""
    for sensor in defs.sensors or []:
        yield f"sensor {sensor.name}", sensor.description or ""
    for schedule in defs.schedules or []:
        yield f"schedule {schedule.name}", schedule.description or ""


def test_every_description_in_the_ui_reads_as_written(settings: Settings) -> None:
    described = list(descriptions(build_definitions(settings)))
    # The walk reaches every kind of thing the UI describes, the dbt models and tests included.
    assert {what.split()[0] for what, text in described if text} >= {
        "asset",
        "check",
        "job",
        "op",
        "sensor",
        "schedule",
    }
    assert any(what == "asset success_by_type" and "Raw SQL" in text for what, text in described)
    assert {what for what, _ in described} >= {"check unique_stg_tasks_task_id", "check every_line_accounted_for"}

    unreadable = {what: lost for what, text in described if (lost := lost_words(text))}
    assert unreadable == {}


def test_the_rendering_check_sees_what_a_reader_would_not() -> None:
    """The check above passes only if it can fail: each way text vanishes from a description."""
    placeholder = "written to <data>/exports/training_dataset.parquet"
    assert lost_words(placeholder) == ["data", "html <data>"]
    assert lost_words("as synth-<batch>-g<N>.jsonl") == ["N", "batch", "html <batch>", "html <N>"]
    assert "__init__" in lost_words("the __init__ file")
    assert "amp" in lost_words("this &amp; that")
    assert "example" in lost_words("[the docs](https://example.org/docs)")
    assert lost_words("<div>\nhidden\n</div>") == ["div", "div", "hidden", "html <div>\nhidden\n</div>"]
    # What reads as written: code spans, fenced code (dbt's Raw SQL), comparisons, autolinks.
    fine = [
        "written to `$ADP_DATA_DIR/exports/training_dataset.parquet`, as `synth-<batch>-g<N>.jsonl`",
        "#### Raw SQL:\n```sql\nselect a from t where b < 3 and c <> d\n```",
        "generation >= 1, under 5 % of them, a < b, see https://dagster.io or www.example.org",
        "accepted + rejected = non-blank lines; `*.jsonl`; ADP_SUCCESS_THRESHOLD; task_id",
    ]
    assert [text for text in fine if lost_words(text)] == []
