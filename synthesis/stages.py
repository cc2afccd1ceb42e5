"""The filters a synthesized candidate goes through, in order (DESIGN.md §10)."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """The filter that rejected a candidate: the ``stage`` column of ``synthesis_rejects``.

    The values are stored in the lake and read by people, dbt and docs/operations.md: a value is
    never renamed. The order of the members is the order of the filters.
    """

    MODEL = "model"  # no task: the model gave no valid answer, or the reseed's probe read no instruction
    VALIDATION = "validation"  # the strict task format or ingest's own parser refused the task
    SELF_CHECK = "self_check"  # its gold solution fails its own check, or a null solution passes it
    DEDUPE = "dedupe"  # a copy or near duplicate of a known task or of an earlier candidate
    GUARD = "guard"  # the daily budgets: accepted tasks, and the tokens to make it
