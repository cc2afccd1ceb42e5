"""The checks of ``synthesized_tasks``, evaluated in its own step (see the tasks checks)."""

import dagster as dg

from adp_pipeline.defs.markdown import for_people, markdown_table
from adp_pipeline.defs.resources import AdpResource
from adp_pipeline.storage.synthesis import known_tasks
from adp_pipeline.storage.tables import WRITTEN_BY_SYNTHESIS
from synthesis.dedupe import DedupeIndex

NEAR_DUPLICATE_LIMIT = 0.05

CHECK_SPECS = [
    dg.AssetCheckSpec(
        "synthesized_success_per_generation",
        asset="synthesized_tasks",
        description="The synthesized tasks this batch ran (generation >= 1, written by adp's synthesis) were "
        "verified at a rate of at least ADP_SYNTH_MIN_SUCCESS, per generation.",
    ),
    dg.AssetCheckSpec(
        "accepted_near_duplicate_rate",
        asset="synthesized_tasks",
        description="Under 5 % of the accepted tasks copy or nearly copy a known task or each other, "
        "recomputed from the lake with a fresh index (not the one the filter used).",
    ),
]


def evaluate_checks(adp: AdpResource, batch: str) -> list[dg.AssetCheckResult]:
    return [synthesized_success_per_generation(adp, batch), accepted_near_duplicate_rate(adp, batch)]


def synthesized_success_per_generation(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    threshold = adp.settings().synth_min_success
    with adp.lake().connect() as connection:
        rates = connection.execute(
            "SELECT t.generation, count(*), count(*) FILTER (WHERE r.verified_success) "
            "FROM tasks t JOIN trajectories r USING (batch, task_id) "
            f"WHERE t.batch = ? AND {WRITTEN_BY_SYNTHESIS} GROUP BY 1 ORDER BY 1",
            [batch],
        ).fetchall()
    below = [generation for generation, n, ok in rates if ok / n < threshold]
    table = markdown_table(
        ("generation", "tasks", "verified", "rate"), [(g, n, ok, f"{ok / n:.1%}") for g, n, ok in rates]
    )
    return dg.AssetCheckResult(
        check_name="synthesized_success_per_generation",
        passed=not below,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "no synthesized tasks ran in this batch"
            if not rates
            else (f"below {threshold:.0%} in generation {below}" if below else None)
        ),
        metadata=for_people({"threshold": threshold, "rates": table}),
    )


def accepted_near_duplicate_rate(adp: AdpResource, batch: str) -> dg.AssetCheckResult:
    settings = adp.settings()
    with adp.lake().connect() as connection:
        accepted = connection.execute(
            "SELECT task_id, description FROM synthesized_tasks WHERE batch = ? ORDER BY task_id", [batch]
        ).fetchall()
    if not accepted:  # nothing to compare: skip reading and hashing every known task
        return dg.AssetCheckResult(
            check_name="accepted_near_duplicate_rate",
            passed=True,
            metadata=for_people({"accepted": 0, "duplicates": 0}),
        )
    mine = {task_id for task_id, _ in accepted}
    known = known_tasks(adp.lake(), except_batch=batch)
    others = {task_id: text for task_id, text in known.items() if task_id not in mine}
    index = DedupeIndex(settings.synth_dedup_threshold)
    index.add(list(others), list(others.values()))
    verdicts = index.check([text for _, text in accepted])
    repeats = [(task_id, verdict) for (task_id, _), verdict in zip(accepted, verdicts, strict=True) if verdict]
    rate = len(repeats) / len(accepted) if accepted else 0.0
    return dg.AssetCheckResult(
        check_name="accepted_near_duplicate_rate",
        passed=rate < NEAR_DUPLICATE_LIMIT,
        metadata=for_people(
            {
                "accepted": len(accepted),
                "duplicates": len(repeats),
                "rate": rate,
                "examples": [f"{task_id}: {verdict.kind} of {verdict.of}" for task_id, verdict in repeats[:10]],
            }
        ),
    )
