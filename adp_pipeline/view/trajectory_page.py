"""The body of `adp view`'s one-trajectory page: the task, each step, the verifier's result, and
a tab with the conversation exactly as ``adp export --format openai`` writes it.

Everything from the lake goes through :func:`text`; the only markup made from data is
Pygments' (its ``<span class=…>`` tokens around escaped text: no inline style, which the CSP
forbids). A URL is shown as text, never as a link: a page or a model chose it. The tabs are two
links to the same page (``?tab=messages``): the view runs no script.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from typing import Any

import duckdb
from pygments import highlight  # type: ignore[import-untyped]  # no stubs: it returns str
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
from pygments.lexers import PythonLexer  # type: ignore[import-untyped]

# The exporter's own row reader and record builder: the tab shows what `adp export` writes.
from adp_pipeline.export.formats import check_messages, json_text, openai_record
from adp_pipeline.export.writer import SOURCE_COLUMNS, source_from_row
from adp_pipeline.storage import Lake
from adp_pipeline.storage.rows import named
from adp_pipeline.storage.view_queries import MAX_SHOWN_CHARS, MAX_SHOWN_STEPS, StepView, TrajectoryDetail, shown_text
from adp_pipeline.view.html import href, table, text
from runtimes.core import BrokenMessagesError, strict_json

TABS = {"steps": "Steps", "messages": "Messages (OpenAI export)"}
# An observation longer than this shows its first lines in its summary, the rest folded.
PREVIEW_LINES = 5
PREVIEW_LINE_CHARS = 200
# Parameters that hold source code, by tool: highlighted as that language.
_CODE_PARAMS = {("python_executor", "code"): PythonLexer}
# Longer code is shown as plain text: highlighting a model's megabyte would hold the page up.
MAX_HIGHLIGHTED_CHARS = 100_000
# Only class names (``.highlight .k``) around escaped text: the stylesheet (html.CSS) holds the colours.
_FORMATTER = HtmlFormatter(nowrap=True)


# The messages tab shows this much of the exported record's JSON (the rest: `adp export`).
MAX_SHOWN_RECORD_CHARS = 4 * MAX_SHOWN_CHARS
# A trajectory whose messages and tools hold more characters than this is not read for the tab.
MAX_RECORD_SOURCE_CHARS = 8_000_000


def _shown(value: object, what: str = "adp query") -> str:
    """``value`` as HTML text, cut (with a note saying so) when the query read only its beginning."""
    shown, cut = shown_text("" if value is None else str(value))
    note = f"\n… cut: only the first {MAX_SHOWN_CHARS:,} characters are shown ({what} reads it whole)"
    return text(shown) + (f"<span class=cut>{text(note)}</span>" if cut else "")


# A screenshot is a capped viewport JPEG; a file far larger is not one adp wrote.
MAX_SCREENSHOT_BYTES = 16 * 1024 * 1024


def screenshot_bytes(lake: Lake, stored: str) -> bytes | None:
    """The JPEG a step row names (``stored``), or None unless it is a screenshot path of the lake
    (:meth:`Lake.screenshot_file`: inside ``screenshots/`` once every link is followed) naming a
    regular file: a row written by hand or by a bug can serve no other file."""
    target = lake.screenshot_file(stored)
    if target is None:
        return None
    try:
        # No link at the last step (one swapped in since the check is refused), and no wait on a FIFO.
        descriptor = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        found = os.fstat(descriptor)
        if not stat.S_ISREG(found.st_mode) or found.st_size > MAX_SCREENSHOT_BYTES:
            return None  # a directory, a FIFO, a device: not a screenshot
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read(MAX_SCREENSHOT_BYTES)
    finally:
        os.close(descriptor)


def exported_record(connection: duckdb.DuckDBPyConnection, batch: str, task_id: str) -> dict[str, Any] | str:
    """The ``openai`` export's record of this trajectory (its line in the JSON-lines file), or,
    when the exporter refuses the trajectory or it is too large to show, why (a string)."""
    size = connection.execute(
        "SELECT length(messages) + length(tools) FROM trajectories WHERE batch = ? AND task_id = ? LIMIT 1",
        [batch, task_id],
    ).fetchone()
    if size is not None and size[0] is not None and int(size[0]) > MAX_RECORD_SOURCE_CHARS:
        # Reading, parsing and indenting it would hold hundreds of MB per request for a page that
        # shows its first MAX_SHOWN_RECORD_CHARS characters anyway.
        return (
            f"its messages and tools are {int(size[0]):,} characters, more than a page shows "
            f"({MAX_RECORD_SOURCE_CHARS:,}); adp export --format openai --include-failed writes them"
        )
    rows = named(
        connection.execute(
            f"SELECT {SOURCE_COLUMNS} FROM trajectories WHERE batch = ? AND task_id = ? LIMIT 1", [batch, task_id]
        )
    )
    if not rows:
        return "no trajectory"
    try:
        source = source_from_row(rows[0], 0.0)
        check_messages(source.messages)  # as the exporter does, record by record
        return dict(json.loads(json_text(openai_record(source))))  # its line: strict JSON
    except BrokenMessagesError as exc:
        return f"adp export leaves this trajectory out: {exc}"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # messages that are not a conversation
        return f"adp export cannot read this trajectory's messages: {exc}"
    except RecursionError:  # JSON nested deeper than Python's parser goes: not a conversation either
        return "adp export cannot read this trajectory's messages: they are nested too deep"


def trajectory_body(
    detail: TrajectoryDetail,
    tab: str,
    query: Mapping[str, str],
    record: dict[str, Any] | str | None = None,
    nav: str = "",
) -> str:
    """The page's HTML: its header, ``nav`` (links to other trajectories, already HTML), the tab
    links (keeping the rest of ``query``), then the ``steps`` tab or the ``messages`` one (the
    exported ``record``)."""
    r = detail.row
    outcome = "succeeded" if r.success else "failed"
    header = (
        f"<p>batch {text(r.batch)} · {text(r.task_type)} · policy {text(r.policy)} · "
        f'<span class="{"ok" if r.success else "fail"}">{outcome}</span> · '
        f'<a class=lineage href="{href(["lineage", r.task_id])}">lineage</a></p>'
    )
    keep = {k: v for k, v in query.items() if k != "tab"}
    tabs = "".join(
        f'<a class="tab{" current" if name == tab else ""}"'
        f"{' aria-current=page' if name == tab else ''} "
        f'href="{href(["trajectories", r.batch, r.task_id], keep | ({"tab": name} if name != "steps" else {}))}">'
        f"{text(label)}</a>"
        for name, label in TABS.items()
    )
    body = _messages(record, r.success and r.verified is True) if tab == "messages" else _steps_tab(detail)
    return f"{header}{nav}<nav class=tabs>{tabs}</nav>{body}"


def _steps_tab(detail: TrajectoryDetail) -> str:
    r = detail.row
    total = len(detail.steps) if detail.steps_total is None else detail.steps_total
    parts = ["<h2>Task</h2>", _task(detail), _run(detail), f"<h2>Steps ({text(total)})</h2>"]
    parts += [_step(detail.row.batch, r.task_id, step) for step in detail.steps]
    if total > len(detail.steps):
        parts.append(
            f"<p class='fail steps-cut'>Only the first {text(len(detail.steps))} of {text(total)} steps are "
            f"shown (a page shows at most {MAX_SHOWN_STEPS}); adp query reads them all.</p>"
        )
    error = (
        f"<p class=fail>{text(r.error_type)}: {_shown(detail.error_message)}</p>"
        if r.error_type or detail.error_message
        else ""
    )
    parts += [
        "<h2>Result</h2>",
        f"<pre class=final>{_shown(detail.final_result)}</pre>",
        f"<section class=error>{error}</section>",
        "<h3>Verifier</h3>",
        _verifier(detail.verifier),
    ]
    return "".join(parts)


def _task(detail: TrajectoryDetail) -> str:
    task = detail.task
    if task is None:
        return "<p class=fail>The lake holds no task row for this trajectory.</p>"
    constraints = _json_object(task.constraints)
    verify = constraints.pop("verify", None) if constraints is not None else None
    facts = table(
        ["expected tools", "max steps", "timeout"],
        [[text(", ".join(task.expected_tools)), text(task.max_steps), text(f"{task.timeout} s")]],
    )
    rest = task.constraints if constraints is None else _pretty(constraints)
    return (
        f"<pre class=description>{_shown(task.description)}</pre>"
        f"<section class=task-facts>{facts}</section>"
        f"<h3>Verify</h3><pre class=verify>{text(_pretty(verify) if verify is not None else 'no verify spec')}</pre>"
        f"<details class=constraints><summary>Other constraints</summary><pre>{_shown(rest)}</pre></details>"
    )


def _run(detail: TrajectoryDetail) -> str:
    run = detail.run
    if run is None:
        return ""
    cells = [
        text(run.model or "—") + (f" ({text(run.provider)})" if run.provider else ""),
        text(f"{run.total_duration:.2f} s"),
        text(run.prompt_tokens),
        text(run.completion_tokens),
        text(run.total_tokens),
        text(f"{run.llm_calls} (+{run.llm_cached_calls} cached, {run.llm_retries} retried)"),
        text(run.attempts),
    ]
    headers = ["model", "duration", "prompt tokens", "completion tokens", "total tokens", "LLM calls", "attempts"]
    # Tokens are the trajectory's sum: the lake does not keep each call's usage, and a step is a
    # tool call, several of which one LLM answer may make, so a step has no tokens of its own.
    return f"<h3>Run</h3><section class=run>{table(headers, [cells])}</section>"


def _step(batch: str, task_id: str, step: StepView) -> str:
    state = "ok" if step.success else "fail"
    error = (
        f"<p class=fail>{text(step.error_type)}: {_shown(step.error_message)}</p>"
        if step.error_type or step.error_message
        else ""
    )
    shot = ""
    if step.screenshot:
        # The link names the step and, in ``v``, the file it shows now (its name holds the bytes'
        # digest): a re-run of the batch gives the step another file, so another URL, and a
        # browser never shows the old image from its cache.
        url = href(["screenshots", batch, str(step.step_id), task_id], {"v": step.screenshot.rsplit("/", 1)[-1]})
        shot = (
            f'<a class=step-screenshot href="{url}"><img class=step-screenshot src="{url}" '
            f'alt="screenshot after step {step.step_id}" loading=lazy></a>'
        )
    return (
        f'<section class="{"step" if step.success else "step step-failed"}" id="step-{step.step_id}">'
        f"<h3>{text(step.step_id)}. "
        f"<span class=tool>{text(step.tool)}</span> <small class=duration>{step.duration:.2f} s</small> "
        f'<small class="{state}">{"ok" if step.success else "failed"}</small></h3>'
        f"{_params(step.tool, step.action_params)}{_observation(step.observation, step.observation_chars)}"
        f"{error}{shot}</section>"
    )


def _params(tool: str, action_params: str) -> str:
    """A step's parameters, one per line: code highlighted, everything else (URLs included) as text."""
    params = _json_object(action_params)
    if params is None:  # not a JSON object, or cut by the query (too long to show whole)
        return f"<pre class=params>{_shown(action_params)}</pre>"
    lines = []
    for name, value in params.items():
        lexer = _CODE_PARAMS.get((tool, name))
        if lexer is not None and isinstance(value, str) and len(value) <= MAX_HIGHLIGHTED_CHARS:
            lines.append(f"<span class=param>{text(name)}</span>:\n{highlight(value, lexer(), _FORMATTER)}")
        else:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            css = "param-value url" if name == "url" else "param-value"
            lines.append(f'<span class=param>{text(name)}</span>: <span class="{css}">{text(shown)}</span>\n')
    return f"<pre class='params highlight'>{''.join(lines)}</pre>"


def _observation(observation: str, chars: int | None = None) -> str:
    """Folded: the summary shows its first lines, the whole text (or, past MAX_SHOWN_CHARS, its
    beginning and a note) is in the fold. ``chars``: the whole observation's length."""
    chars = len(observation) if chars is None else chars
    whole = observation
    observation, cut = shown_text(observation)
    lines = observation.splitlines()
    preview = "\n".join(
        line if len(line) <= PREVIEW_LINE_CHARS else line[:PREVIEW_LINE_CHARS] + "…" for line in lines[:PREVIEW_LINES]
    )
    more = cut or len(lines) > PREVIEW_LINES or preview != "\n".join(lines)
    size = f"{_count(chars, 'char')}, cut" if cut else f"{_count(len(lines), 'line')}, {_count(chars, 'char')}"
    return (
        f"<details class=observation><summary>Observation ({size})"
        f"{'' if not preview else f'<span class=preview>{text(preview)}</span>'}"
        f"{'<span class=more>… open for the rest</span>' if more else ''}</summary>"
        f"<pre>{_shown(whole)}</pre></details>"
    )


def _verifier(verifier: str | None) -> str:
    """The verifier's checks (each passed or not) and details, or that the task has none."""
    report = _json_object(verifier)
    if report is None:
        return f"<pre class=verifier>{_shown(verifier or 'no verifier')}</pre>"
    checks = report.get("checks") if isinstance(report.get("checks"), dict) else {}
    passed = report.get("passed") is True
    lines = [f'<span class="{"ok" if passed else "fail"}">{"passed" if passed else "not passed"}</span>']
    lines += [
        f'<span class="{"ok" if ok else "fail"}">{"✓" if ok else "✗"}</span> {text(name)}'
        for name, ok in (checks or {}).items()
    ]
    details = report.get("details")
    return f"<pre class=verifier>{chr(10).join(lines)}</pre>" + (
        f"<pre class=verifier-details>{_shown(details)}</pre>" if details else ""
    )


def _messages(record: dict[str, Any] | str | None, verified_success: bool) -> str:
    if not isinstance(record, dict):
        return f"<p class=fail>{text(record or 'no record')}</p>"
    exported = json.dumps(record, indent=2, ensure_ascii=False)
    cut = len(exported) > MAX_SHOWN_RECORD_CHARS
    shown = text(exported[:MAX_SHOWN_RECORD_CHARS]) + (
        f"<span class=cut>\n… cut: only the first {MAX_SHOWN_RECORD_CHARS:,} characters are shown "
        "(adp export writes it whole)</span>"
        if cut
        else ""
    )
    which = "" if verified_success else " (not a verified success: only <code>--include-failed</code> exports it)"
    return (
        "<p>The trajectory's line of <code>adp export --format openai</code> (messages and tool schemas), "
        f"indented{which}.</p><pre class=messages>{shown}</pre>"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _json_object(value: str | None) -> dict[str, Any] | None:
    try:
        parsed = strict_json(value) if value else None
    except ValueError:  # not JSON, or nested deeper than MAX_JSON_DEPTH: shown as text
        return None
    return parsed if isinstance(parsed, dict) else None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
