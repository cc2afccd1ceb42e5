"""The view's HTML: every value from the lake goes through :func:`text` (or :func:`attr`) and
every link through :func:`href`, so a task, a model or a page can only ever show up as text."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

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


_HIGHLIGHT = HtmlFormatter(style="default")

# The one-trajectory page (trajectory_page.py): tabs, steps, folded observations, screenshots,
# and Pygments' token colours: its highlighted code carries class names only (``.highlight .k``),
# since the CSP allows no inline style.
CSS += """
nav.tabs { margin: 1rem 0; border-bottom: 1px solid #ccc; } nav.tabs a { padding: .25rem .75rem; }
nav.tabs a.current { font-weight: bold; border: 1px solid #ccc; border-bottom-color: #fff; }
.step h3 small { font-weight: normal; margin-left: .5rem; } .param { color: #555; font-weight: bold; }
.step.step-failed { border-left-color: #a00; }
details.observation > summary .preview { display: block; white-space: pre-wrap; font-family: monospace;
  background: #f5f5f5; padding: .25rem .5rem; margin-top: .25rem; word-break: break-word; }
details.observation[open] > summary .preview, details.observation[open] > summary .more { display: none; }
img.step-screenshot { max-width: 320px; max-height: 240px; border: 1px solid #ccc; display: block; margin: .5rem 0; }
"""
CSS += "\n".join(_HIGHLIGHT.get_background_style_defs(".highlight") + _HIGHLIGHT.get_token_style_defs(".highlight"))
