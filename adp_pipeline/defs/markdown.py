"""What the Dagster UI shows: the one way materialisation and check metadata is made from text.

The UI renders ``MetadataValue.md`` as Markdown, so any text from a task file, a model, a page,
sandboxed code or an error that reached it unescaped could make an operator's browser fetch an
attacker's image the moment the asset page opens, or show a link that is not what it says.
Every piece of such text goes through :func:`markdown_text` (secrets redacted, every Markdown
construct escaped), and every Markdown value is built in this module; text, JSON and path
values go through :func:`for_people`, which redacts them. ``tests/test_untrusted_markdown.py``
holds the rest of adp_pipeline to that.
"""

from __future__ import annotations

import base64
import contextlib
import re
import traceback
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from adp_pipeline.charts import bar_chart_png, format_value
from runtimes.core import redact

# Inline Markdown (CommonMark + GFM) starts with one of these: escapes, code spans, emphasis
# and strikethrough, links and images, raw HTML and autolinks, entities, table pipes, headings,
# setext underlines, math. A backslash before any ASCII punctuation is a literal character in
# CommonMark.
_SYNTAX = re.compile(r"[\\`*_{}\[\]()<>#!|~^=:&$@]")
# GFM's literal autolinks (``www.x``, ``http(s)://x``, ``bob@x``, ``mailto:``/``xmpp:``) are
# not syntax a backslash can escape: remark-gfm, which renders the Dagster UI's Markdown, looks
# for them in the text *after* escapes are resolved, so ``http\://evil/x.png`` is still a link.
# The text itself must not hold them: an invisible U+2060 WORD JOINER goes inside every ``//``,
# before every ``@``, between ``www`` and ``.`` and between a link scheme and its ``:``. The
# reader sees the same characters; no linkifier (GFM's, linkify-it's) finds a link in them.
_WORD_JOINER = "\u2060"
_AUTOLINKS = re.compile(r"(?i)/(?=/)|(?=@)|www(?=\.)|(?:https?|ftps?|mailto|xmpp)(?=:)")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def markdown_text(value: object) -> str:
    """``value`` as inline Markdown that renders as exactly its text, secrets redacted.

    Line breaks become spaces (a table cell, a title: one line), literal autolinks are broken
    by invisible word joiners, and every character that could start Markdown syntax is
    backslash-escaped, so images, links, autolinks, raw HTML, emphasis, code spans and table
    pipes show as the characters they are.
    """
    text = _LINE_BREAKS.sub(" ", redact(str(value)))
    text = _AUTOLINKS.sub(lambda match: match.group() + _WORD_JOINER, text)
    return _SYNTAX.sub(lambda match: "\\" + match.group(), text)


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    shown: int | None = None,
    where_the_rest_is: str = "",
    total: int | None = None,
) -> dg.MetadataValue:
    """``rows`` (the first ``shown`` of them) under ``header``, and how many more there are
    (``where_the_rest_is``: adp's own Markdown); every cell and heading is :func:`markdown_text`.
    ``total``: the rows there are in all, when ``rows`` holds only the first ones."""
    lines = [f"| {' | '.join(markdown_text(name) for name in header)} |", f"|{'---|' * len(header)}"]
    lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows[:shown]]
    if shown is not None and (more := (len(rows) if total is None else total) - shown) > 0:
        lines.append(f"\n…and {more} more{where_the_rest_is}")
    return dg.MetadataValue.md("\n".join(lines))


def markdown_code(text: str, language: str = "", *, limit: int | None = None) -> dg.MetadataValue:
    """``text`` (secrets redacted, then cut to ``limit`` characters) as a fenced code block: a
    fence longer than any run of backticks in it, so no line of it can end the block early."""
    shown = redact(text)[:limit]
    longest = max((len(run) for run in re.findall(r"`+", shown)), default=0)
    fence = "`" * max(3, longest + 1)
    return dg.MetadataValue.md(f"{fence}{re.sub(r'[^A-Za-z0-9_+-]', '', language)}\n{shown}\n{fence}")


def markdown_bar_chart(
    title: str, labels: Sequence[object], values: Sequence[float], *, percent: bool = False
) -> dg.MetadataValue:
    """The title, a horizontal bar per label (top to bottom, in order) as a PNG data URI, and the
    table of labels and values (what each bar is, for readers that do not render images)."""
    if not values:
        return dg.MetadataValue.md(f"**{markdown_text(title)}**: no data")
    image = base64.b64encode(bar_chart_png(values, full_scale=1.0 if percent else None)).decode()
    rows = [
        f"| {markdown_text(label)} | {format_value(value, percent)} |"
        for label, value in zip(labels, values, strict=True)
    ]
    title_md = markdown_text(title)
    return dg.MetadataValue.md(
        "\n".join(
            [f"**{title_md}**", "", f"![{title_md}](data:image/png;base64,{image})", "", "| | |", "|---|---|", *rows]
        )
    )


def for_people(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` with the secrets of its text, JSON, path and URL values redacted (Markdown
    values are made redacted by this module; numbers and booleans pass as they are)."""
    return {key: _redacted_value(value) for key, value in metadata.items()}


def _redacted_value(value: Any) -> Any:
    if isinstance(value, dg.TextMetadataValue):
        return dg.MetadataValue.text(redact(value.value))
    if isinstance(value, dg.JsonMetadataValue):
        return dg.MetadataValue.json(_redacted_json(value.value))
    if isinstance(value, dg.PathMetadataValue):
        return dg.MetadataValue.path(redact(str(value.value)))
    if isinstance(value, dg.UrlMetadataValue):
        return dg.MetadataValue.url(redact(value.value))
    if isinstance(value, str):
        return dg.MetadataValue.text(redact(value))
    if isinstance(value, list | dict):
        return dg.MetadataValue.json(_redacted_json(value))
    return value


def _redacted_json(data: Any) -> Any:
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, list | tuple):
        return [_redacted_json(item) for item in data]
    if isinstance(data, dict):
        return {redact(str(key)): _redacted_json(item) for key, item in data.items()}
    return data


class RedactedFailure(Exception):
    """An asset's failure that had secrets in it and cannot be raised again as its own type."""


@contextlib.contextmanager
def failures_redacted() -> Iterator[None]:
    """Run an asset's body so that an exception it raises reaches Dagster's event log (and the
    `adp run` error line) with its secrets redacted.

    When the exception, its causes or their messages hold a secret, the innermost error (the
    one `adp run` names) is raised again, as its own type where it can be made from a message
    (else as :class:`RedactedFailure`), with the whole redacted traceback as a note; the
    original chain, which holds the secret, is dropped.
    """
    try:
        yield
    except dg.DagsterError:  # Dagster's own control flow (Failure, retries, interrupts)
        raise
    except Exception as exc:
        told = "".join(traceback.format_exception(exc))
        shown = redact(told)
        if shown == told:
            raise
        innermost: BaseException = exc
        while (inner := innermost.__cause__ or innermost.__context__) is not None:
            innermost = inner
        message = redact(str(innermost))
        try:
            retold: Exception = type(innermost)(message)  # type: ignore[assignment]
            if str(retold) != message:
                raise TypeError(message)
        except Exception:
            retold = RedactedFailure(f"{type(innermost).__name__}: {message}")
        retold.add_note(f"(secrets redacted) the failure as it happened:\n{shown}")
        raise retold from None
