"""The view's HTML: every value from the lake goes through :func:`text` (or :func:`attr`) and
every link through :func:`href`, so a task, a model or a page can only ever show up as text."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from adp_pipeline.view.links import route

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
pre { background: #f5f5f5; padding: .5rem; white-space: pre-wrap; word-break: break-word; }
.step { border-left: 3px solid #999; padding-left: .75rem; margin: 1rem 0; }
.fail { color: #a00; } .ok { color: #070; }
nav a { margin-right: 1rem; } form label { margin-right: .75rem; }
"""


def text(value: object) -> str:
    """``value`` as HTML text (None shows as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def href(path_segments: Iterable[str], query: Mapping[str, str] | None = None) -> str:
    """An escaped, same-origin link: each segment percent-encoded (no ``/``, no scheme can slip
    in: the link always starts with ``/``), the query string encoded."""
    return text(route(path_segments, query))


def page(title: str, body: str) -> str:
    """A whole page around ``body`` (already HTML); ``title`` is escaped."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{text(title)} · adp view</title>"
        '<link rel=stylesheet href="/static/view.css"></head><body>'
        '<nav><a href="/">Batches</a><a href="/trajectories">Trajectories</a><a href="/rejects">Rejects</a></nav>'
        f"<h1>{text(title)}</h1>{body}</body></html>"
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table; ``rows`` hold cells already rendered as HTML, headers are escaped."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
