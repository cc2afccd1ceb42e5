"""The container files agree with the code: pins, ports, passwords, scrape targets, dashboard.

The stack itself runs in `make e2e-docker` (scripts/e2e_docker.py); these checks need no Docker.
"""

import json
import os
import re
import tomllib
from pathlib import Path

import dagster as dg
import yaml

from runtimes.core import TaskType
from runtimes.scale import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        name, _, version = requirement.split(";")[0].strip().partition("==")
        assert version, f"{requirement} is not pinned to one version"
        pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_image_lock_pins_every_declared_dependency_at_the_declared_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["deploy"])
    lines = (ROOT / "docker" / "requirements.lock").read_text().splitlines()
    locked = _pins([line for line in lines if line and not line.lstrip().startswith("#")])
    drift = {name: (version, locked.get(name)) for name, version in declared.items() if locked.get(name) != version}
    assert not drift, f"docker/requirements.lock disagrees with pyproject.toml (run `make lock`): {drift}"


def test_every_service_image_is_built_from_a_dockerfile_of_the_repository_or_is_an_optional_profile():
    for name, service in SERVICES.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name
        else:
            assert service.get("profiles"), f"{name} needs an image registry, so it must be optional"
    for runtime in TaskType:
        assert f"runtime-{runtime.value}" in SERVICES


def test_published_ports_are_on_localhost_only():
    published = [(name, port) for name, service in SERVICES.items() for port in service.get("ports", [])]
    assert published
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_no_service_ships_a_default_password():
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in ("REDIS_PASSWORD", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), f"{variable} must be required, got {uses}"
    grafana = SERVICES["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert "set GRAFANA_ADMIN_PASSWORD" in " ".join(grafana["entrypoint"])


def _dockerfile_chain(image: str) -> str:
    """An image's Dockerfile with those of the adp images it builds on."""
    text = (ROOT / "docker" / f"{image}.Dockerfile").read_text()
    parent = re.search(r"^FROM adp-([\w-]+):", text, re.MULTILINE)
    return text + (_dockerfile_chain(parent.group(1)) if parent else "")


def test_prometheus_scrapes_every_runtime_service_on_the_workers_metrics_port():
    config = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    (dns,) = config["scrape_configs"][0]["dns_sd_configs"]
    assert sorted(dns["names"]) == sorted(f"runtime-{runtime.value}" for runtime in TaskType)
    for runtime in TaskType:
        dockerfile = _dockerfile_chain(f"runtime-{runtime.value}")
        assert f"METRICS_PORT={dns['port']}" in dockerfile
        assert "ADP_METRICS_HOST=0.0.0.0" in dockerfile


def test_the_dashboard_queries_only_metrics_that_workers_export():
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    exported = {
        family.name + suffix for family in WorkerMetrics().registry.collect() for suffix in suffixes[family.type]
    }
    dashboard = json.loads((ROOT / "docker" / "grafana" / "dashboards" / "adp.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    functions = {"sum", "by", "rate", "max", "clamp_min", "histogram_quantile"}
    labels = {"le", "runtime", "status", "queue", "error_type", "kind"}
    words = {word for expr in expressions for word in re.findall(r"[a-z_]+(?=[\[{(\s)]|$)", expr)}
    names = words - functions - labels
    assert names, expressions
    assert names <= exported, f"dashboard metrics no worker exports: {names - exported}"
    for metric in ("tasks_completed_total", "queue_size", "tasks_failed_total", "cache_hits_total"):
        assert any(metric in expr for expr in expressions), metric


def test_every_data_file_of_the_packages_is_declared_package_data():
    """The images install adp non-editable: a file not declared here is missing there."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    covered = {path for package, patterns in declared.items() for p in patterns for path in (ROOT / package).glob(p)}
    data_files = {
        path
        for package in ("adp_pipeline", "runtimes", "synthesis")
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert data_files, "expected the web site and the instance template"
    assert data_files <= covered, f"not in [tool.setuptools.package-data]: {sorted(data_files - covered)}"


def test_the_compose_instance_config_is_one_dagster_accepts(tmp_path: Path) -> None:
    """The deployment's dagster.yaml, rendered as the entrypoint renders it (with SQLite in place
    of Postgres, which is not here), loads, and its limits are the ones it states."""
    template = (ROOT / "docker" / "dagster" / "dagster.yaml.template").read_text()
    config = yaml.safe_load(os.path.expandvars(template.replace("${", "${ADP_TEST_")))
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(tmp_path))  # not entered: it would stay current
    try:
        concurrency = instance.get_concurrency_config()
    finally:
        instance.dispose()
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert concurrency.pool_config.default_pool_limit == 1
