"""The dbt quality project as Dagster assets: its models downstream of the lake's assets, its
tests as asset checks (dagster-dbt).

dbt reads adp's catalog attached read-only and writes its own DuckDB file
(``$ADP_DATA_DIR/quality.duckdb``), so a dbt run never takes a lock a running batch needs;
runs of it are serialised by the ``dbt`` concurrency pool (limit 1 in the instance config).
The assets are built with the definitions, not at import: building them prepares the manifest
(``dbt parse``), which the settings' project folder decides.
"""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.quality import dbt_executable, dbt_project, ensure_manifest
from adp_pipeline.storage import ensure_catalog
from runtimes.settings import Settings

QUALITY_GROUP = "quality"


class _Translator(DagsterDbtTranslator):
    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return QUALITY_GROUP


def build_quality_assets(settings: Settings) -> tuple[dg.AssetsDefinition, DbtCliResource]:
    """The ``quality_models`` assets of the dbt project in ``settings.dbt_project_dir``, and the
    dbt resource that runs them.

    Raises:
        DbtProjectError: there is no dbt project there, or ``dbt parse`` failed.
    """
    project = dbt_project(settings.dbt_project_dir)

    @dbt_assets(
        manifest=ensure_manifest(project),
        project=project,
        name="quality_models",
        pool="dbt",
        dagster_dbt_translator=_Translator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_duplicate_source_asset_keys=True)
        ),
    )
    def quality_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, adp: AdpResource) -> Iterator[Any]:
        """``dbt build``: staging views, marts, and their tests as asset checks. Every result is
        reported first; then a failed ERROR-severity test (a blocking check) or a model that cannot
        be built fails the step, while a warning test only shows as a failed WARN check."""
        ensure_catalog(adp.data_path)  # the views dbt reads, current with the lake's tables
        # The profile and the tests read these as dbt vars: dbt's process gets them on its command
        # line, and this process's environment stays as it is.
        run_vars = {"adp_data_dir": str(adp.data_path), "adp_success_threshold": adp.settings().success_threshold}
        invocation = dbt.cli(["build", "--vars", json.dumps(run_vars)], context=context, raise_on_error=False)
        yield from invocation.stream()
        broken = [
            f"{result['unique_id']}: {result.get('message')}"
            for result in invocation.get_artifact("run_results.json").get("results", [])
            if result.get("status") == "error" and not result["unique_id"].startswith("test.")
        ]
        if broken:
            raise RuntimeError(f"dbt could not build {len(broken)} models: {'; '.join(broken)[:2000]}")

    resource = DbtCliResource(
        project_dir=project, profiles_dir=str(project.profiles_dir), dbt_executable=dbt_executable()
    )
    return quality_models, resource
