"""Sites adp serves itself, inside the browser: requests to these hosts are answered from
local folders by Playwright's request routing, so no server or port is needed and the pages
work offline. MiniWoB++ pages come from the ``miniwob`` package (some need http, not file://)."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from urllib.parse import unquote, urlsplit

import miniwob

SITE_HOSTS: dict[str, Path] = {
    "adp.local": Path(__file__).with_name("site"),
    "miniwob.local": Path(miniwob.__file__).parent / "html",
}


def local_file(url: str) -> Path | None:
    """The file a URL on one of adp's own hosts names, or None (not ours, or outside the folder)."""
    parts = urlsplit(url)
    root = SITE_HOSTS.get(parts.hostname or "") if parts.scheme in {"http", "https"} else None
    if root is None:
        return None
    relative = unquote(parts.path).lstrip("/") or "index.html"
    path = (root / relative).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def miniwob_url(task: str) -> str:
    return f"http://miniwob.local/miniwob/{task}.html"
