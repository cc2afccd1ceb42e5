"""What adp delivers from the lake: the training set (and, beside it, the dbt quality models)."""

import json

import dagster as dg

from adp_pipeline.defs.markdown import failures_redacted, for_people, markdown_code, markdown_table
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.defs.trajectories.assets import trajectories
from adp_pipeline.export import export_training_set

_SAMPLE_CHARS = 4000
_EXCLUDED_SHOWN = 20


@dg.asset(
    group_name="delivery",
    deps=[trajectories],
    kinds={"python", "parquet"},
    description="The training set: one verified trajectory per task across all batches, in ADP_EXPORT_FORMAT, "
    "with a deterministic train/validation split; written to `$ADP_DATA_DIR/exports/training_dataset.parquet` "
    "(openai: adp's metadata beside it, in `training_dataset.meta.parquet`).",
)
@failures_redacted()
def training_dataset(context: dg.AssetExecutionContext, adp: AdpResource) -> dg.MaterializeResult:
    settings = adp.settings()
    out = adp.data_path / "exports" / "training_dataset.parquet"
    summary = export_training_set(
        adp.lake(),
        out,
        export_format=settings.export_format,
        val_fraction=settings.export_val_fraction,
        on_progress=lambda done: context.log.info(f"{done} trajectories read") if done % 10_000 == 0 else None,
        overwrite=True,  # adp's own file, replaced by each nightly run
    )
    context.log.info(f"wrote {out}: {summary.rows} records, {len(summary.excluded)} left out")
    metadata: dict[str, dg.MetadataValue] = {
        "path": dg.MetadataValue.path(str(out)),
        "format": dg.MetadataValue.text(settings.export_format),
        "records": dg.MetadataValue.int(summary.rows),
        "by_split": dg.MetadataValue.json(dict(summary.by_split)),
        "by_type": markdown_table(("type", "records"), sorted(summary.by_type.items())),
        "left_out": dg.MetadataValue.int(len(summary.excluded)),
        "sample": markdown_code(json.dumps(summary.sample, ensure_ascii=False, indent=1), "json", limit=_SAMPLE_CHARS)
        if summary.sample
        else dg.MetadataValue.text("(no records)"),
    }
    if summary.sidecar is not None:  # a format with no room for adp's metadata in its records
        metadata["metadata_path"] = dg.MetadataValue.path(str(summary.sidecar))
    if summary.excluded:
        metadata["left_out_reasons"] = markdown_table(("task", "reason"), summary.excluded, shown=_EXCLUDED_SHOWN)
    return dg.MaterializeResult(metadata=for_people(metadata))
