"""`adp view`: a local, read-only web app over the lake (server-rendered HTML, no script).

It reads through the lake-only DuckDB access of `adp query` (``open_catalog``), escapes every
value it shows, and sends a Content-Security-Policy that forbids script and remote loads. It
does not import dagster, so it starts fast.
"""

from adp_pipeline.view.app import build_app

__all__ = ["build_app"]
