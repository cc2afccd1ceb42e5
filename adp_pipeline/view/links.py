"""Links into `adp view`: the one place its URLs are built, for its own pages and for Dagster's
metadata (no dagster import here). Path segments and query values are percent-encoded, so a
batch or task id can never add a segment, a query or a scheme."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit


def route(path_segments: Iterable[str], query: Mapping[str, str] | None = None) -> str:
    """The same-origin path of a page: each segment percent-encoded (``/`` included), empty query
    values left out. It always starts with ``/``."""
    path = "/" + "/".join(quote(segment, safe="") for segment in path_segments)
    kept = {key: value for key, value in (query or {}).items() if value}
    return path + "?" + urlencode(kept) if kept else path


@dataclass(frozen=True)
class ViewLinks:
    """Absolute links to the viewer's pages under ``base`` (ADP_VIEW_URL: the viewer as the
    operator's browser reaches it)."""

    base: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"the viewer's URL must be http(s)://host[:port][/path], not {self.base!r}")
        object.__setattr__(self, "base", self.base.rstrip("/"))

    def batch(self, batch: str) -> str:
        """The trajectories page filtered to ``batch``."""
        return self.base + route(["trajectories"], {"batch": batch})

    def failed(self, batch: str, error_type: str | None = None) -> str:
        """The batch's failed trajectories (of ``error_type`` when given)."""
        return self.base + route(["trajectories"], {"batch": batch, "success": "false", "error_type": error_type or ""})

    def trajectory(self, batch: str, task_id: str) -> str:
        return self.base + route(["trajectories", batch, task_id])

    def lineage(self, task_id: str) -> str:
        return self.base + route(["lineage", task_id])

    def rejects(self, batch: str) -> str:
        """The synthesis rejects of ``batch``, all stages."""
        return self.base + route(["rejects"], {"batch": batch})


def view_links(base: str | None) -> ViewLinks | None:
    """The links under ``base`` (a setting, maybe unset): None when there is no viewer to link."""
    return None if base is None else ViewLinks(base)
