"""The compose stack's `viewer` service (issue #21): `adp view` over the deployment's lake,
published on 127.0.0.1 only, linked from Dagster. The stack itself runs in `make e2e-docker`
(scripts/e2e_docker.py checks the service answers and shows the batch); these checks read the
files and need no Docker."""

from __future__ import annotations

import yaml

from tests.helpers import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DAGSTER = ("dagster-code", "dagster-webserver", "dagster-daemon")


def test_the_viewer_serves_the_deployments_lake_on_localhost_with_a_healthcheck() -> None:
    viewer = SERVICES["viewer"]
    command = " ".join(viewer["command"])
    assert "exec adp view --host 0.0.0.0 --port 8080 --data-dir /data" in command
    # A fresh stack has no lake yet and `adp view` refuses a data dir without one: laid out first.
    assert command.index("adp query --create") < command.index("adp view")
    assert viewer["ports"] == ["127.0.0.1:${ADP_VIEW_PORT:-8080}:8080"]
    assert "adp-data:/data" in viewer["volumes"]
    assert (REPO / viewer["build"]["dockerfile"]).is_file()
    assert "http://127.0.0.1:8080/" in " ".join(viewer["healthcheck"]["test"])
    assert "depends_on" not in viewer  # it reads the volume: no other service has to be up
    assert "ADP_VIEW_PORT" in (REPO / ".env.example").read_text()


def test_dagster_links_to_the_viewer_where_the_operators_browser_reaches_it() -> None:
    for name in DAGSTER:
        url = SERVICES[name]["environment"]["ADP_VIEW_URL"]
        # ADP_VIEW_URL wins; by default, the viewer's published port on this host.
        assert url == "${ADP_VIEW_URL:-http://127.0.0.1:${ADP_VIEW_PORT:-8080}}", name


def test_every_variable_the_run_launcher_passes_is_set_for_the_dagster_services() -> None:
    """dagster-docker fails a run whose launcher names a variable the daemon's environment lacks:
    each one of the template's ``env_vars`` is in the Dagster services' environment."""
    template = yaml.safe_load((REPO / "docker" / "dagster" / "dagster.yaml.template").read_text())
    passed = template["run_launcher"]["config"]["env_vars"]
    assert "ADP_VIEW_URL" in passed  # the run containers write the metadata that links to the viewer
    for name in DAGSTER:
        environment = SERVICES[name]["environment"]
        assert [v for v in passed if "=" not in v and v not in environment] == [], name
