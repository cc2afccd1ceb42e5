"""The Starlette app of `adp view`: three GET pages over the lake and one stylesheet.

Each request opens its own read-only, lake-only connection (:func:`open_catalog`, as `adp
query` does) under the query limits, so a slow page is interrupted like a slow query and a run
writing the lake meanwhile is never blocked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from adp_pipeline.storage import Lake, QueryLimits, within_limits
from adp_pipeline.storage.view_queries import (
    MAX_GENERATIONS,
    MAX_SHOWN_RELATIVES,
    LineageTask,
    batch_summaries,
    lineage,
    neighbours,
    reject_page,
    shown_text,
    step_screenshot,
    synthesis_counts,
    trajectory_detail,
    trajectory_page,
)
from adp_pipeline.view.connections import ChoicesCache, SharedCatalog
from adp_pipeline.view.filters import (
    BadParameter,
    cursor_params,
    filter_form,
    filter_params,
    neighbour_nav,
    parse_query,
    trajectory_link,
    when,
)
from adp_pipeline.view.html import CSS, href, page, table, text
from adp_pipeline.view.trajectory_page import TABS, exported_record, screenshot_bytes, trajectory_body
from runtimes.core import AdpError, redact

PAGE_SIZE = 50
# No script at all, nothing from another origin, no plugins, no framing, no <base> rewrite.
CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


# The names a browser on this machine reaches a viewer bound to a loopback address by.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class _SecurityHeaders(BaseHTTPMiddleware):
    """The headers above on every answer, and, when ``hosts`` is given, only requests that name
    one of them in their Host header: a web page that points its own domain at 127.0.0.1 (DNS
    rebinding) would otherwise read the lake from the operator's browser, same-origin to it."""

    def __init__(self, app: ASGIApp, hosts: Collection[str] | None = None) -> None:
        super().__init__(app)
        self._hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if self._hosts is not None and _host_name(request.headers.get("host", "")) not in self._hosts:
            body = "<p class=fail>This viewer answers only requests addressed to it by a local name.</p>"
            response: Response = HTMLResponse(page("Unknown host", body), 421)
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response


def _host_name(header: str) -> str | None:
    """The host of a Host header (``name``, ``name:port``, ``[v6]:port``), lower case; None if malformed
    (a Host is never a URL: user info, a path, a query or a fragment in it is not a host of ours)."""
    if any(mark in header for mark in "@/?#\\"):
        return None
    try:
        return urlsplit("//" + header).hostname
    except ValueError:
        return None


def build_app(data_dir: Path, limits: QueryLimits, hosts: Collection[str] | None = None) -> Starlette:
    """The viewer over the lake in ``data_dir``; every query runs under ``limits``.

    Args:
        hosts: the host names requests may be addressed to (the Host header); None: any (a
            viewer bound to a public address, which its operator chose to expose).
    """

    shared = SharedCatalog(data_dir, limits)  # opening the catalog costs more than a page's queries
    lake_files = Lake(data_dir)
    choices_cache = ChoicesCache(lake_files.root)

    @contextmanager
    def lake() -> Iterator[duckdb.DuckDBPyConnection]:
        with shared.cursor() as connection, within_limits(connection, limits, "the page"):
            yield connection

    def batches(request: Request) -> Response:
        with lake() as connection:
            summaries = batch_summaries(connection)
            synthesis = synthesis_counts(connection)
        rows = [
            [
                f'<a href="{href(["trajectories"], {"batch": s.batch})}">{text(s.batch)}</a>',
                text(s.tasks),
                "<br>".join(f"{text(t)}: {text(v)}/{text(n)}" for t, (v, n) in s.by_type.items()),
                "<br>".join(
                    f'<a href="{href(["trajectories"], {"batch": s.batch, "success": "false", "error_type": e})}">'
                    f"{text(e)}</a>: {text(c)}"
                    for e, c in s.errors.items()
                ),
                _synthesis_cell(s.batch, *synthesis.get(s.batch, (0, {}))),
            ]
            for s in summaries
        ]
        body = table(
            ["batch", "tasks", "verified / trajectories per type", "failures by error type", "synthesis"], rows
        )
        return HTMLResponse(page("Batches", body if rows else "<p>No batches yet.</p>"))

    def trajectories(request: Request) -> Response:
        try:
            query = parse_query(request.query_params.multi_items())
        except BadParameter as bad:
            return _bad_parameter(bad)
        where = query.filter()
        with lake() as connection:
            found = trajectory_page(connection, where, query.cursor(), PAGE_SIZE)
            choices = choices_cache.get(connection)
        rows = [
            [
                f'<a class=task href="{trajectory_link(where, r.batch, r.task_id)}">{text(r.task_id)}</a>',
                f"<span class=description>{text(_preview(r.description, 120) if r.description else '')}</span>",
                text(r.batch),
                text(r.task_type),
                f'<span class="{"ok" if r.success else "fail"}">{"yes" if r.success else "no"}</span>',
                text("—" if r.verified is None else "passed" if r.verified else "failed"),
                text(r.error_type),
                text(r.n_steps),
                text(f"{r.total_duration:.1f}s"),
                text(r.total_tokens),
                text(r.policy),
                text(r.model),
                text(r.generation),
                text(when(r.created_at)),
            ]
            for r in found.rows
        ]
        headers = [
            "task",
            "description",
            "batch",
            "type",
            "success",
            "verified",
            "error type",
            "steps",
            "duration",
            "tokens",
        ]
        body = filter_form(where, choices) + (
            table([*headers, "policy", "model", "generation", "time (UTC)"], rows)
            if rows
            else "<p>No trajectories match.</p>"
        )
        if found.next_after is not None:
            more = filter_params(where) | cursor_params(found.next_after)
            body += f'<p><a rel=next href="{href(["trajectories"], more)}">Next page</a></p>'
        return HTMLResponse(page("Trajectories", body))

    def trajectory(request: Request) -> Response:
        batch, task_id = request.path_params["batch"], request.path_params["task_id"]
        tab = request.query_params.get("tab", "steps")
        if tab not in TABS:
            return HTMLResponse(page("Not found", f"<p>No tab {text(tab)}.</p>"), 404)
        try:  # the list's filter, carried by its links, orders the previous/next
            where = parse_query(request.query_params.multi_items(), only_filter=True).filter()
        except BadParameter as bad:
            return _bad_parameter(bad)
        with lake() as connection:
            detail = trajectory_detail(connection, batch, task_id)
            around = neighbours(connection, where, batch, task_id) if detail is not None else None
            record = exported_record(connection, batch, task_id) if detail is not None and tab == "messages" else None
        if detail is None:
            return HTMLResponse(page("Not found", f"<p>No trajectory {text(task_id)} in batch {text(batch)}.</p>"), 404)
        nav = "" if around is None else neighbour_nav(where, around)  # previous/next within the filter
        return HTMLResponse(page(task_id, trajectory_body(detail, tab, request.query_params, record, nav)))

    def screenshot(request: Request) -> Response:
        """A step's screenshot, named by its step (never by a file): the file the step row names,
        served only if it is a regular .jpg file inside the lake's screenshots/ folder."""
        batch, step_id, task_id = (request.path_params[k] for k in ("batch", "step_id", "task_id"))
        with lake() as connection:
            stored = step_screenshot(connection, batch, task_id, step_id)
        image = None if stored is None else screenshot_bytes(lake_files, stored)
        if stored is None or image is None:
            return Response("no such screenshot", 404, media_type="text/plain")
        # The file's name holds its digest: a URL that names it (``v``, as the step's page links it)
        # never names other bytes; one without it names the step, whose file a re-run replaces.
        current = request.query_params.get("v") == stored.rsplit("/", 1)[-1]
        cache = "public, max-age=31536000, immutable" if current else "no-cache"
        return Response(image, media_type="image/jpeg", headers={"Cache-Control": cache})

    def lineage_page(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        with lake() as connection:
            found = lineage(connection, task_id)
        if found is None:
            return HTMLResponse(page("Not found", f"<p>The lake knows no task {text(task_id)}.</p>"), 404)
        headers = ["task", "generation", "mutation", "parents", "essences", "outcome"]
        parents = table(headers, [_lineage_row(t) for t in found.ancestors]) if found.ancestors else "<p>None.</p>"
        children = (
            table(headers, [_lineage_row(t) for t in found.children])
            if found.children
            else "<p>No synthesized task names it as a parent.</p>"
        )
        cut = f"<p class=fail>The walk stopped after {MAX_GENERATIONS} generations; older parents are not shown.</p>"
        if found.ancestors_cut:
            cut = f"<p class=fail>The walk stopped at {MAX_SHOWN_RELATIVES} parents; the others are not shown.</p>"
        n_children = len(found.children) if found.children_total is None else found.children_total
        if n_children > len(found.children):
            children += (
                f"<p class=fail>The first {text(len(found.children))} children by task id are shown; "
                "adp query lists them all.</p>"
            )
        parts = [
            f"<section class=task>{table(headers, [_lineage_row(found.task)])}</section>",
            f"<h2>Parents, up to generation 0 ({len(found.ancestors)})</h2>",
            f"<section class=parents>{parents}{cut if found.cut or found.ancestors_cut else ''}</section>",
            f"<h2>Children ({text(n_children)})</h2>",
            f"<section class=children>{children}</section>",
        ]
        return HTMLResponse(page(f"Lineage of {task_id}", "".join(parts)))

    def rejects(request: Request) -> Response:
        q = request.query_params
        batch, stage = q.get("batch") or None, q.get("stage") or None
        keys = ("after_batch", "after_stage", "after_key")
        after = (q["after_batch"], q["after_stage"], q["after_key"]) if all(k in q for k in keys) else None
        with lake() as connection:
            found = reject_page(connection, batch, stage, after, PAGE_SIZE)
        stages = " · ".join(
            f'<a href="{href(["rejects"], {"batch": batch or "", "stage": s})}">{text(s)}</a>: {text(n)}'
            for s, n in found.per_stage.items()
        )
        rows = [
            [
                text(r.batch),
                text(r.stage),
                f"<pre class=candidate>{text(r.candidate_id or _preview(r.description))}</pre>",
                f"<pre class=reason>{text(_cut_note(r.reason))}</pre>",
                text(r.task_type) + " · " + text(r.mutation),
                _task_links(r.parent_task_ids),
            ]
            for r in found.rows
        ]
        body = f"<p class=stages>Rejects per stage: {stages or 'none'}</p>" + (
            table(["batch", "stage", "candidate", "reason", "type · mutation", "parents"], rows)
            if rows
            else "<p>No rejects match.</p>"
        )
        if found.next_after is not None:
            keep = {k: v for k, v in q.items() if k not in keys}
            more = keep | dict(zip(keys, found.next_after, strict=True))
            body += f'<p><a rel=next href="{href(["rejects"], more)}">Next page</a></p>'
        title = "Synthesis rejects" + (f" of {batch}" if batch else "") + (f" at {stage}" if stage else "")
        return HTMLResponse(page(title, body))

    def stylesheet(request: Request) -> Response:
        return Response(CSS, media_type="text/css")

    routes = [
        Route("/", batches, methods=["GET"]),
        Route("/trajectories", trajectories, methods=["GET"]),
        Route("/trajectories/{batch}/{task_id:path}", trajectory, methods=["GET"]),
        Route("/screenshots/{batch}/{step_id:int}/{task_id:path}", screenshot, methods=["GET"]),
        Route("/lineage/{task_id:path}", lineage_page, methods=["GET"]),
        Route("/rejects", rejects, methods=["GET"]),
        Route("/static/view.css", stylesheet, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders, hosts=hosts)])

    async def adp_error(request: Request, exc: Exception) -> Response:
        return HTMLResponse(page("Cannot read the lake", f"<pre>{text(redact(str(exc)))}</pre>"), 503)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # Starlette answers an unexpected exception outside every middleware: the headers are
        # set here, so even a bug's page runs no script and is not sniffed.
        return HTMLResponse(
            page("Internal error", "<p>The viewer failed on this page; its log says why.</p>"),
            500,
            headers=SECURITY_HEADERS,
        )

    app.add_exception_handler(AdpError, adp_error)
    app.add_exception_handler(duckdb.Error, adp_error)
    app.add_exception_handler(Exception, internal_error)
    return app


def _cut_note(value: str) -> str:
    """``value`` as a page shows it (its beginning, with a note when the query cut it)."""
    shown, cut = shown_text(value)
    return shown + ("\n… cut (adp query reads it whole)" if cut else "")


def _bad_parameter(bad: BadParameter) -> Response:
    """The 400 page of a query parameter the page cannot take: which one, and why."""
    body = (
        f"<p class=fail>The parameter <code class=parameter>{text(bad.name)}</code> {text(bad.problem)}.</p>"
        '<p><a href="/trajectories">All trajectories</a></p>'
    )
    return HTMLResponse(page("Bad parameter", body), 400)


def _synthesis_cell(batch: str, accepted: int, rejected: dict[str, int]) -> str:
    """A batch's synthesis: accepted, then rejected per stage, each linked to its rejects."""
    if not accepted and not rejected:
        return ""
    link = f'<a href="{href(["rejects"], {"batch": batch})}">rejected {text(sum(rejected.values()))}</a>'
    stages = ", ".join(
        f'<a href="{href(["rejects"], {"batch": batch, "stage": s})}">{text(s)} {text(n)}</a>'
        for s, n in rejected.items()
    )
    return f"accepted {text(accepted)} · {link}" + (f" ({stages})" if stages else "")


# A row links at most this many of a task's parents (the rest are counted): a synthesis row
# naming thousands of parents would otherwise repeat them in every row that shows it.
MAX_LINKED_PARENTS = 20


def _task_links(task_ids: list[str]) -> str:
    links = ", ".join(f'<a href="{href(["lineage", t])}">{text(t)}</a>' for t in task_ids[:MAX_LINKED_PARENTS])
    more = len(task_ids) - MAX_LINKED_PARENTS
    return links + (f" and {text(more)} more" if more > 0 else "")


def _lineage_row(task: LineageTask) -> list[str]:
    """A task of a lineage: linked to its lineage and, when it ran, to its trajectory."""
    if task.batch is None:
        outcome = "not run yet"
    else:
        css, word = ("ok", "verified") if task.verified else ("fail", "not verified")
        verdict = f'<span class="{css}">{word}</span>'
        outcome = f'<a class=trajectory href="{href(["trajectories", task.batch, task.task_id])}">{verdict}</a>'
    return [
        f'<a class=task href="{href(["lineage", task.task_id])}">{text(task.task_id)}</a>',
        text(0 if task.generation is None else task.generation),
        text(task.mutation),
        _task_links(task.parent_task_ids),
        text(", ".join(task.essence_ids)),
        outcome,
    ]


def _preview(description: str | None, limit: int = 200) -> str:
    if description is None:
        return "(no task)"
    return description if len(description) <= limit else description[:limit] + "…"
