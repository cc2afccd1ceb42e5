"""What `adp view` shows, asked of the lake and answered as dataclasses (the view only renders them).

Each function takes a connection from :func:`open_catalog` (the lake-only, read-only access of
`adp query`). Every value a person picks (a batch, a type, an error type, the page's last task
id) is bound as a parameter, never pasted into the SQL. Pages of trajectories are keyset
pages: ``(batch, task_id) > (after)`` in that order, so a page costs the same wherever it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class BatchSummary:
    """One batch: its tasks, per task type the trajectories and verified successes, and the
    error types of its failed trajectories with their counts."""

    batch: str
    tasks: int
    by_type: dict[str, tuple[int, int]]  # task_type -> (verified successes, trajectories)
    errors: dict[str, int]  # error_type (or "none") -> failed trajectories


@dataclass(frozen=True)
class TrajectoryFilter:
    """The trajectories page's filter; None leaves a field unfiltered."""

    batch: str | None = None
    task_type: str | None = None
    success: bool | None = None
    error_type: str | None = None


@dataclass(frozen=True)
class TrajectoryRow:
    batch: str
    task_id: str
    task_type: str
    success: bool
    verified: bool | None
    error_type: str | None
    n_steps: int
    policy: str


@dataclass(frozen=True)
class TrajectoryPage:
    """A page of trajectories; ``next_after`` is the key the next page starts after (None: last page)."""

    rows: list[TrajectoryRow]
    next_after: tuple[str, str] | None


@dataclass(frozen=True)
class StepView:
    step_id: int
    tool: str
    action_params: str
    observation: str
    success: bool
    error_type: str | None
    error_message: str | None
    duration: float


@dataclass(frozen=True)
class TrajectoryDetail:
    """One trajectory with its task (None when the task row is missing) and its steps in order."""

    row: TrajectoryRow
    description: str | None
    constraints: str | None
    error_message: str | None
    final_result: str
    verifier: str | None
    steps: list[StepView]


def batch_summaries(connection: duckdb.DuckDBPyConnection) -> list[BatchSummary]:
    """Every batch with trajectories or tasks, newest key first."""
    tasks = dict(connection.execute("SELECT batch, count(*) FROM tasks GROUP BY batch").fetchall())
    by_type: dict[str, dict[str, tuple[int, int]]] = {}
    for batch, task_type, verified, total in connection.execute(
        "SELECT batch, task_type, count(*) FILTER (WHERE verified_success), count(*) "
        "FROM trajectories GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        by_type.setdefault(batch, {})[task_type] = (int(verified), int(total))
    errors: dict[str, dict[str, int]] = {}
    for batch, error_type, count in connection.execute(
        "SELECT batch, coalesce(error_type, 'none'), count(*) FROM trajectories WHERE NOT success "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        errors.setdefault(batch, {})[error_type] = int(count)
    batches = sorted(set(tasks) | set(by_type), reverse=True)
    return [BatchSummary(b, int(tasks.get(b, 0)), by_type.get(b, {}), errors.get(b, {})) for b in batches]


_ROW_COLUMNS = "batch, task_id, task_type, success, verified, error_type, n_steps, policy"


def _row(values: tuple[object, ...]) -> TrajectoryRow:
    batch, task_id, task_type, success, verified, error_type, n_steps, policy = values
    return TrajectoryRow(
        str(batch),
        str(task_id),
        str(task_type),
        bool(success),
        None if verified is None else bool(verified),
        None if error_type is None else str(error_type),
        int(str(n_steps)),
        str(policy),
    )


def trajectory_page(
    connection: duckdb.DuckDBPyConnection, where: TrajectoryFilter, after: tuple[str, str] | None, limit: int
) -> TrajectoryPage:
    """Up to ``limit`` trajectories matching ``where`` after the key ``after``, by (batch, task_id)."""
    conditions: list[str] = ["TRUE"]
    params: list[object] = []
    for column, value in (("batch", where.batch), ("task_type", where.task_type), ("error_type", where.error_type)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    if where.success is not None:
        conditions.append("success = ?")
        params.append(where.success)
    if after is not None:
        conditions.append("(batch, task_id) > (?, ?)")
        params += list(after)
    sql = (
        f"SELECT {_ROW_COLUMNS} FROM trajectories WHERE {' AND '.join(conditions)} "
        f"ORDER BY batch, task_id LIMIT {int(limit) + 1}"
    )
    rows = [_row(values) for values in connection.execute(sql, params).fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return TrajectoryPage(rows, (rows[-1].batch, rows[-1].task_id) if more and rows else None)


def trajectory_detail(connection: duckdb.DuckDBPyConnection, batch: str, task_id: str) -> TrajectoryDetail | None:
    """The trajectory of ``task_id`` in ``batch`` with its task and steps, or None if there is none."""
    found = connection.execute(
        f"SELECT {_ROW_COLUMNS}, error_message, final_result, verifier FROM trajectories "
        "WHERE batch = ? AND task_id = ? LIMIT 1",
        [batch, task_id],
    ).fetchone()
    if found is None:
        return None
    task = connection.execute(
        "SELECT description, constraints FROM tasks WHERE batch = ? AND task_id = ? LIMIT 1", [batch, task_id]
    ).fetchone()
    steps = [
        StepView(int(s), str(tool), str(params), str(obs), bool(ok), et, em, float(duration))
        for s, tool, params, obs, ok, et, em, duration in connection.execute(
            "SELECT step_id, tool, action_params, observation, success, error_type, error_message, duration "
            "FROM steps WHERE batch = ? AND task_id = ? ORDER BY step_id",
            [batch, task_id],
        ).fetchall()
    ]
    return TrajectoryDetail(
        row=_row(found[:8]),
        description=None if task is None else str(task[0]),
        constraints=None if task is None else str(task[1]),
        error_message=found[8],
        final_result=str(found[9]),
        verifier=found[10],
        steps=steps,
    )
