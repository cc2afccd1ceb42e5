"""What `adp view` shows, asked of the lake and answered as dataclasses (the view only renders them).

Each function takes a connection from :func:`open_catalog` (the lake-only, read-only access of
`adp query`). Every value a person picks (a batch, a type, an error type, the page's last task
id, a search) is bound as a parameter, never pasted into the SQL. Pages of trajectories are
keyset pages: ``(sort value, batch, task_id)`` after the previous page's last, never an OFFSET,
so a page costs the same wherever it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import duckdb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


@dataclass(frozen=True)
class BatchSummary:
    """One batch: its tasks, per task type the trajectories and verified successes, and the
    error types of its failed trajectories with their counts."""

    batch: str
    tasks: int
    by_type: dict[str, tuple[int, int]]  # task_type -> (verified successes, trajectories)
    errors: dict[str, int]  # error_type (or "none") -> failed trajectories


class SortKey(StrEnum):
    """What the trajectories list can be ordered by (each ascending or descending)."""

    CREATED = "created"  # when the trajectory was recorded; descending: newest first
    TASK_ID = "task_id"
    BATCH = "batch"
    DURATION = "duration"
    STEPS = "steps"
    TOKENS = "tokens"


class SortOrder(StrEnum):
    ASC = "asc"
    DESC = "desc"


class VerifiedFilter(StrEnum):
    """The verifier's verdict: passed, failed, or the task has no verifier (``verified`` null)."""

    PASSED = "true"
    FAILED = "false"
    NO_VERIFIER = "none"


# Each sort's value as SQL over ``trajectories`` and the Python type of its cursor value. A
# timestamp sorts as its integer microseconds, so the cursor a page hands the next is exact.
_SORT_VALUES: dict[SortKey, tuple[str, type[int] | type[float] | type[str]]] = {
    SortKey.CREATED: ("epoch_us(created_at)", int),
    SortKey.TASK_ID: ("task_id", str),
    SortKey.BATCH: ("batch", str),
    SortKey.DURATION: ("total_duration", float),
    SortKey.STEPS: ("n_steps", int),
    SortKey.TOKENS: ("total_tokens", int),
}
# The error type that stands for none (a failure without one), as the batches page counts it.
NO_ERROR_TYPE = "none"


def _true_or_false(value: object) -> object:
    # A query string says "true" or "false"; pydantic's own bool parsing would also take "yes",
    # "on", "1" ..., which no link of the view makes.
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError("must be true or false")
        return value == "true"
    return value


class TrajectoryFilter(BaseModel):
    """The trajectories list's filter and order; None leaves a field unfiltered. Built from a
    query string too (the view's links and form): an empty value there means unset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: str | None = None
    task_type: str | None = None
    success: Annotated[bool | None, BeforeValidator(_true_or_false)] = None
    verified: VerifiedFilter | None = None
    error_type: str | None = None  # NO_ERROR_TYPE: failures without an error type
    policy: str | None = None
    model: str | None = None
    generation: int | None = Field(None, ge=0)  # 0 includes rows written before generations existed
    search: str | None = Field(None, max_length=500)  # case-insensitive, in the task id and description
    sort: SortKey = SortKey.CREATED
    order: SortOrder = SortOrder.DESC

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: object) -> object:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value != ""}
        return data


@dataclass(frozen=True)
class Cursor:
    """Where a keyset page starts: after the trajectory with this sort value (None: the
    trajectory has none, e.g. no ``created_at``), batch and task id."""

    value: int | float | str | None
    batch: str
    task_id: str


def cursor_value(sort: SortKey, raw: str | None) -> int | float | str | None:
    """A cursor's sort value read back from its text (None: no value).

    Raises:
        ValueError: ``raw`` is not a value of ``sort`` (an integer, a finite number or text).
    """
    if raw is None:
        return None
    kind = _SORT_VALUES[sort][1]
    value = kind(raw)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return value


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
class ListedTrajectory(TrajectoryRow):
    """A row of the trajectories list: the trajectory, the start of its task's description
    (None without a task row), and its key in the list's order."""

    model: str | None
    generation: int
    total_duration: float
    total_tokens: int
    created_at: datetime | None
    description: str | None
    cursor: Cursor


@dataclass(frozen=True)
class TrajectoryPage:
    """A page of trajectories; ``next_after`` is the key the next page starts after (None: last page)."""

    rows: list[ListedTrajectory]
    next_after: Cursor | None


@dataclass(frozen=True)
class Neighbours:
    """The (batch, task_id) of the trajectories just before and after one in a filter's order
    (None: it is the first, or the last)."""

    previous: tuple[str, str] | None
    next: tuple[str, str] | None


@dataclass(frozen=True)
class FilterChoices:
    """The values each filter can take, as the lake holds them (batches newest first)."""

    batches: list[str]
    task_types: list[str]
    error_types: list[str]
    policies: list[str]
    models: list[str]
    generations: list[int]


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
    screenshot: str | None = None  # the page after a web step: a path under the lake's screenshots/
    observation_chars: int | None = None  # the whole observation's length (``observation`` may be cut)


@dataclass(frozen=True)
class TaskView:
    """What the task asked: its text and limits (``constraints`` is JSON text)."""

    description: str
    constraints: str
    expected_tools: list[str]
    max_steps: int
    timeout: int


@dataclass(frozen=True)
class RunView:
    """How the trajectory ran: its model, time and the tokens of its LLM calls (the lake keeps
    their sum per trajectory and how many calls there were, not each call's tokens)."""

    model: str | None
    provider: str | None
    total_duration: float
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    llm_calls: int
    llm_retries: int
    llm_cached_calls: int
    attempts: int


@dataclass(frozen=True)
class TrajectoryDetail:
    """One trajectory with its task (None when the task row is missing) and its steps in order."""

    row: TrajectoryRow
    error_message: str | None
    final_result: str
    verifier: str | None
    steps: list[StepView]
    task: TaskView | None = None
    run: RunView | None = None
    steps_total: int | None = None  # how many steps the lake holds, when ``steps`` holds only the first


# A page shows a value of the lake (an observation, parameters, a result, a description) up to
# this many characters and only the first steps of a trajectory: the queries read no more (a
# 60 MB observation or a million-step trajectory must neither fill the server's memory nor make
# a page the browser cannot open). A cut value is read as its first MAX_SHOWN_CHARS + 1
# characters, so the page knows it is cut; `adp query` reads it whole.
MAX_SHOWN_CHARS = 50_000
MAX_SHOWN_STEPS = 200


def _cut(column: str) -> str:
    """``column`` read as at most MAX_SHOWN_CHARS + 1 characters (one more: the page sees it is cut)."""
    return f"left({column}, {MAX_SHOWN_CHARS + 1})"


def shown_text(value: str) -> tuple[str, bool]:
    """``value`` as a page shows it: its first MAX_SHOWN_CHARS characters, and whether it was cut."""
    return (value[:MAX_SHOWN_CHARS], True) if len(value) > MAX_SHOWN_CHARS else (value, False)


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


_LIST_COLUMNS = (
    "batch, task_id, task_type, success, verified, error_type, n_steps, policy, model, "
    "coalesce(generation, 0), total_duration, total_tokens, created_at"
)
_DESCRIPTION_PREVIEW = 200  # characters of a description the list shows


def _like_pattern(text: str) -> str:
    """``text`` as an ILIKE pattern matching it anywhere, its own ``%``, ``_`` and ``\\`` literal."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _conditions(where: TrajectoryFilter) -> tuple[list[str], list[object]]:
    """The SQL conditions of ``where`` over ``trajectories t`` and their parameters. Each is a
    plain comparison of a stored column where it can be, so DuckDB prunes partitions on
    ``batch`` and pushes the rest into the Parquet scan."""
    conditions: list[str] = []
    params: list[object] = []
    for column, value in (
        ("batch", where.batch),
        ("task_type", where.task_type),
        ("policy", where.policy),
        ("model", where.model),
    ):
        if value is not None:
            conditions.append(f"t.{column} = ?")
            params.append(value)
    if where.success is not None:
        conditions.append("t.success = ?")
        params.append(where.success)
    if where.verified is VerifiedFilter.NO_VERIFIER:
        conditions.append("t.verified IS NULL")
    elif where.verified is not None:
        conditions.append("t.verified = ?")
        params.append(where.verified is VerifiedFilter.PASSED)
    if where.error_type == NO_ERROR_TYPE:
        conditions.append(f"(t.error_type IS NULL OR t.error_type = '{NO_ERROR_TYPE}')")
    elif where.error_type is not None:
        conditions.append("t.error_type = ?")
        params.append(where.error_type)
    if where.generation == 0:
        conditions.append("(t.generation IS NULL OR t.generation = 0)")
    elif where.generation is not None:
        conditions.append("t.generation = ?")
        params.append(where.generation)
    if where.search:
        # The description is the task row's of the same batch (as the trajectory page shows it).
        pattern = _like_pattern(where.search)
        in_batch = " AND k.batch = ?" if where.batch is not None else ""
        conditions.append(
            "(t.task_id ILIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM tasks k WHERE k.batch = t.batch "
            f"AND k.task_id = t.task_id{in_batch} AND k.description ILIKE ? ESCAPE '\\'))"
        )
        params += [pattern, *([where.batch] if where.batch is not None else []), pattern]
    return conditions, params


def _after(value: str, cursor: Cursor, descending: bool, nulls_last: bool) -> tuple[str, list[object]]:
    """The condition "comes after ``cursor``" in the order (``value``, batch, task_id), all
    ascending or all descending, the rows without a value (NULL) last or first."""
    beyond = "<" if descending else ">"
    if cursor.value is None:  # among the rows without a value: the rest of them by (batch, task_id)
        tail = f"(t.batch, t.task_id) {beyond} (?, ?)"
        sql = f"({value} IS NULL AND {tail})" if nulls_last else f"({value} IS NOT NULL OR {tail})"
        return sql, [cursor.batch, cursor.task_id]
    row = f"({value}, t.batch, t.task_id) {beyond} (?, ?, ?)"
    sql = f"({value} IS NULL OR {row})" if nulls_last else f"({value} IS NOT NULL AND {row})"
    return sql, [cursor.value, cursor.batch, cursor.task_id]


def _in_order(
    where: TrajectoryFilter, after: Cursor | None, limit: int, columns: str, *, reverse: bool = False
) -> tuple[str, list[object]]:
    """The query of up to ``limit`` rows of ``where`` after ``after`` in its order (``reverse``:
    in the opposite order, i.e. the ones before it, nearest first): ``columns`` then the sort value."""
    value, _ = _SORT_VALUES[where.sort]
    value = "t." + value if value in ("task_id", "batch") else value
    descending = (where.order is SortOrder.DESC) != reverse
    nulls_last = not reverse  # the list shows rows without a value last, whichever the direction
    conditions, params = _conditions(where)
    if after is not None:
        condition, more = _after(value, after, descending, nulls_last)
        conditions.append(condition)
        params += more
    direction, nulls = ("DESC" if descending else "ASC"), ("LAST" if nulls_last else "FIRST")
    sql = (
        f"SELECT {columns}, {value} FROM trajectories t WHERE {' AND '.join(conditions) or 'TRUE'} "
        f"ORDER BY {value} {direction} NULLS {nulls}, t.batch {direction}, t.task_id {direction} LIMIT {int(limit)}"
    )
    return sql, params


def _listed(
    connection: duckdb.DuckDBPyConnection, where: TrajectoryFilter, after: Cursor | None, limit: int
) -> list[ListedTrajectory]:
    """Up to ``limit`` trajectories of ``where`` after ``after`` in its order; descriptions not read."""
    listed = []
    for values in connection.execute(*_in_order(where, after, limit, _LIST_COLUMNS)).fetchall():
        model, generation, duration, tokens, created_at, sort_value = values[8:]
        row = _row(values[:8])
        listed.append(
            ListedTrajectory(
                **{field.name: getattr(row, field.name) for field in fields(TrajectoryRow)},
                model=None if model is None else str(model),
                generation=int(generation),
                total_duration=float(duration),
                total_tokens=int(tokens),
                created_at=created_at,
                description=None,
                cursor=Cursor(sort_value, row.batch, row.task_id),
            )
        )
    return listed


def trajectory_page(
    connection: duckdb.DuckDBPyConnection, where: TrajectoryFilter, after: Cursor | None, limit: int
) -> TrajectoryPage:
    """Up to ``limit`` trajectories matching ``where`` after the key ``after``, in ``where``'s
    order, each with the start of its description."""
    rows = _listed(connection, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if rows:
        # Only the page's rows are looked up: a join of every matching row with its task would
        # read every description of the lake.
        batches = sorted({row.batch for row in rows})
        task_ids = sorted({row.task_id for row in rows})
        found = {
            (str(batch), str(task_id)): str(description)
            for batch, task_id, description in connection.execute(
                f"SELECT batch, task_id, left(description, {_DESCRIPTION_PREVIEW + 1}) FROM tasks "
                f"WHERE batch IN ({', '.join('?' * len(batches))}) AND task_id IN ({', '.join('?' * len(task_ids))})",
                [*batches, *task_ids],
            ).fetchall()
        }
        rows = [replace(row, description=found.get((row.batch, row.task_id))) for row in rows]
    return TrajectoryPage(rows, rows[-1].cursor if more and rows else None)


def neighbours(connection: duckdb.DuckDBPyConnection, where: TrajectoryFilter, batch: str, task_id: str) -> Neighbours:
    """The trajectories just before and after (``batch``, ``task_id``) in ``where``'s list, each
    found by one keyset query from its key (whether or not it matches ``where`` itself)."""
    value, _ = _SORT_VALUES[where.sort]
    found = connection.execute(
        f"SELECT {value} FROM trajectories t WHERE t.batch = ? AND t.task_id = ? LIMIT 1", [batch, task_id]
    ).fetchone()
    if found is None:
        return Neighbours(None, None)
    at = Cursor(found[0], batch, task_id)
    # Only the keys: the scan reads the sort and filter columns, none of the list's others.
    before = connection.execute(*_in_order(where, at, 1, "t.batch, t.task_id", reverse=True)).fetchone()
    after = connection.execute(*_in_order(where, at, 1, "t.batch, t.task_id")).fetchone()
    return Neighbours(
        None if before is None else (str(before[0]), str(before[1])),
        None if after is None else (str(after[0]), str(after[1])),
    )


def filter_choices(connection: duckdb.DuckDBPyConnection) -> FilterChoices:
    """Every value each filter of the trajectories list can take, in one scan of the lake."""
    columns = {
        "batch": "batch",
        "task_type": "task_type",
        "error_type": f"coalesce(error_type, '{NO_ERROR_TYPE}')",
        "policy": "policy",
        "model": "model",
        "generation": "coalesce(generation, 0)",
    }
    which = " ".join(f"WHEN grouping({name}) = 0 THEN '{name}'" for name in columns)
    rows = connection.execute(
        f"SELECT CASE {which} END, coalesce({', '.join(f'{name}::VARCHAR' for name in columns)}) FROM "
        f"(SELECT {', '.join(f'{sql} AS {name}' for name, sql in columns.items())} FROM trajectories) "
        f"GROUP BY GROUPING SETS ({', '.join(f'({name})' for name in columns)})"
    ).fetchall()
    values: dict[str, list[str]] = {name: [] for name in columns}
    for name, value in rows:
        if value is not None:  # a trajectory without a model
            values[str(name)].append(str(value))
    return FilterChoices(
        batches=sorted(values["batch"], reverse=True),
        task_types=sorted(values["task_type"]),
        error_types=sorted(values["error_type"]),
        policies=sorted(values["policy"]),
        models=sorted(values["model"]),
        generations=sorted(int(g) for g in values["generation"]),
    )


def trajectory_detail(connection: duckdb.DuckDBPyConnection, batch: str, task_id: str) -> TrajectoryDetail | None:
    """The trajectory of ``task_id`` in ``batch`` with its task and steps, or None if there is none."""
    found = connection.execute(
        f"SELECT {_ROW_COLUMNS}, {_cut('error_message')}, {_cut('final_result')}, {_cut('verifier')}, model, "
        "provider, total_duration, "
        "prompt_tokens, completion_tokens, total_tokens, llm_calls, llm_retries, llm_cached_calls, attempts "
        "FROM trajectories WHERE batch = ? AND task_id = ? LIMIT 1",
        [batch, task_id],
    ).fetchone()
    if found is None:
        return None
    task = connection.execute(
        f"SELECT {_cut('description')}, {_cut('constraints')}, expected_tools, max_steps, timeout FROM tasks "
        "WHERE batch = ? AND task_id = ? LIMIT 1",
        [batch, task_id],
    ).fetchone()
    found_steps = connection.execute(
        f"SELECT step_id, tool, {_cut('action_params')}, {_cut('observation')}, success, error_type, "
        f"{_cut('error_message')}, duration, screenshot, length(observation), count(*) OVER () "
        f"FROM steps WHERE batch = ? AND task_id = ? ORDER BY step_id LIMIT {MAX_SHOWN_STEPS}",
        [batch, task_id],
    ).fetchall()
    steps = [
        StepView(int(s), str(tool), str(params), str(obs), bool(ok), et, em, float(duration), shot, int(chars))
        for s, tool, params, obs, ok, et, em, duration, shot, chars, _ in found_steps
    ]
    steps_total = int(found_steps[0][-1]) if found_steps else 0
    model, provider, total_duration, *counts = found[11:]
    return TrajectoryDetail(
        row=_row(found[:8]),
        error_message=found[8],
        final_result=str(found[9]),
        verifier=found[10],
        steps=steps,
        task=None
        if task is None
        else TaskView(str(task[0]), str(task[1]), [str(t) for t in task[2]], int(task[3]), int(task[4])),
        run=RunView(model, provider, float(total_duration), *(int(c) for c in counts)),
        steps_total=steps_total,
    )


def step_screenshot(connection: duckdb.DuckDBPyConnection, batch: str, task_id: str, step_id: int) -> str | None:
    """The ``screenshot`` value of one step (a path relative to the lake's root, as the lake
    holds it: not yet checked), or None when there is no such step or it has none."""
    found = connection.execute(
        "SELECT screenshot FROM steps WHERE batch = ? AND task_id = ? AND step_id = ? LIMIT 1",
        [batch, task_id, step_id],
    ).fetchone()
    return None if found is None or found[0] is None else str(found[0])


# How far up a lineage walks: a synthesized task names its parents, and a lake written by hand
# (or by a bug) may hold a chain longer than any loop ran, or a cycle; the walk stops at either.
MAX_GENERATIONS = 1000


@dataclass(frozen=True)
class LineageTask:
    """A task in a lineage: its generation and how synthesis made it (None for a task a person
    wrote), and the outcome of its latest trajectory (``batch`` None: not run yet)."""

    task_id: str
    generation: int | None
    mutation: str | None
    parent_task_ids: list[str]
    essence_ids: list[str]
    batch: str | None
    verified: bool | None


@dataclass(frozen=True)
class Lineage:
    """A task, its ancestors nearest first (each once, however many paths lead to it), and its
    children. ``cut`` says the walk stopped at :data:`MAX_GENERATIONS` with parents left."""

    task: LineageTask
    ancestors: list[LineageTask]
    children: list[LineageTask]
    cut: bool
    children_total: int | None = None  # how many children there are, when ``children`` holds only the first
    ancestors_cut: bool = False  # the walk stopped at MAX_SHOWN_RELATIVES ancestors with parents left


# A lineage page lists at most this many ancestors and this many children (a seed with thousands
# of children, or a row naming a million parents, must not make a page of megabytes).
MAX_SHOWN_RELATIVES = 500


def _lineage_tasks(connection: duckdb.DuckDBPyConnection, ids: list[str], children_of: str | None) -> list[LineageTask]:
    """The tasks ``ids`` (or, with ``children_of``, the synthesized children of that task) with
    their latest synthesis row and latest trajectory."""
    params: list[object]
    if children_of is None:
        chosen, params = "SELECT unnest(?::VARCHAR[]) AS task_id", [ids]
    else:
        chosen = (
            "SELECT DISTINCT task_id FROM synthesized_tasks WHERE list_contains(parent_task_ids, ?) "
            f"ORDER BY task_id LIMIT {MAX_SHOWN_RELATIVES}"
        )
        params = [children_of]
    rows = connection.execute(
        f"WITH chosen AS ({chosen}), "
        "made AS (SELECT task_id, generation, mutation, parent_task_ids, essence_ids FROM synthesized_tasks "
        "  WHERE task_id IN (SELECT task_id FROM chosen) QUALIFY row_number() OVER "
        "  (PARTITION BY task_id ORDER BY created_at DESC, batch DESC) = 1), "
        "ran AS (SELECT task_id, batch, verified_success FROM trajectories "
        "  WHERE task_id IN (SELECT task_id FROM chosen) QUALIFY row_number() OVER "
        # The latest run by its time (a batch's name, <file>-<digest>, says nothing of when it ran).
        "  (PARTITION BY task_id ORDER BY created_at DESC NULLS LAST, batch DESC) = 1) "
        "SELECT c.task_id, m.generation, m.mutation, m.parent_task_ids, m.essence_ids, r.batch, r.verified_success "
        "FROM chosen c LEFT JOIN made m USING (task_id) LEFT JOIN ran r USING (task_id) ORDER BY c.task_id",
        params,
    ).fetchall()
    return [
        LineageTask(
            str(task_id),
            None if generation is None else int(generation),
            None if mutation is None else str(mutation),
            [str(p) for p in parents or []],
            [str(e) for e in essences or []],
            None if batch is None else str(batch),
            None if verified is None else bool(verified),
        )
        for task_id, generation, mutation, parents, essences, batch, verified in rows
    ]


def lineage(
    connection: duckdb.DuckDBPyConnection, task_id: str, max_generations: int = MAX_GENERATIONS
) -> Lineage | None:
    """Where ``task_id`` came from (at most ``max_generations`` up; one query per generation)
    and what synthesis made of it; None when the lake knows nothing of it (no task, trajectory
    or synthesis row names it)."""
    (task,) = _lineage_tasks(connection, [task_id], None)
    known = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE task_id = ?) OR EXISTS (SELECT 1 FROM trajectories "
        "WHERE task_id = ?) OR EXISTS (SELECT 1 FROM synthesized_tasks WHERE task_id = ? "
        "OR list_contains(parent_task_ids, ?))",
        [task_id] * 4,
    ).fetchone()
    if task.generation is None and task.batch is None and not (known and known[0]):
        return None
    seen = {task_id}
    ancestors: list[LineageTask] = []
    frontier = [p for p in dict.fromkeys(task.parent_task_ids) if p not in seen]
    ancestors_cut = False
    for _ in range(max_generations):
        if not frontier:
            break
        room = MAX_SHOWN_RELATIVES - len(ancestors)
        if len(frontier) > room:
            frontier, ancestors_cut = frontier[:room], True
        if not frontier:
            break
        seen.update(frontier)
        level = _lineage_tasks(connection, frontier, None)
        ancestors += level
        frontier = [p for p in dict.fromkeys(p for t in level for p in t.parent_task_ids) if p not in seen]
    children = _lineage_tasks(connection, [], task_id)
    total = len(children)
    if total >= MAX_SHOWN_RELATIVES:
        (counted,) = connection.execute(
            "SELECT count(DISTINCT task_id) FROM synthesized_tasks WHERE list_contains(parent_task_ids, ?)", [task_id]
        ).fetchone() or (total,)
        total = int(counted)
    return Lineage(
        task,
        ancestors,
        children,
        cut=bool(frontier),
        children_total=total,
        ancestors_cut=ancestors_cut,
    )


@dataclass(frozen=True)
class RejectRow:
    batch: str
    stage: str
    candidate_id: str | None
    task_type: str
    mutation: str
    reason: str
    parent_task_ids: list[str]
    description: str | None
    key: str


@dataclass(frozen=True)
class RejectPage:
    """A page of synthesis rejects and, for the whole filter's batch(es), the rejects per stage.
    ``next_after`` is the (batch, stage, key) the next page starts after (None: last page)."""

    rows: list[RejectRow]
    per_stage: dict[str, int]
    next_after: tuple[str, str, str] | None


# A reject has no id of its own (a candidate without a task has no candidate_id), so its page key
# is its time then a digest of its content: keyset paging in time order. Two rows identical to
# the microsecond in every column share a key; a page boundary between them shows one of them.
_REJECT_KEY = (
    "strftime(created_at, '%Y-%m-%dT%H:%M:%S.%f') || '~' || md5(concat_ws(chr(31), coalesce(candidate_id, ''), "
    "task_type, mutation, reason, array_to_string(parent_task_ids, chr(30)), array_to_string(essence_ids, chr(30)), "
    "coalesce(description, ''), coalesce(task, ''), tokens::VARCHAR))"
)


def reject_page(
    connection: duckdb.DuckDBPyConnection,
    batch: str | None,
    stage: str | None,
    after: tuple[str, str, str] | None,
    limit: int,
) -> RejectPage:
    """Up to ``limit`` rejects of ``batch`` at ``stage`` (None: any) after the key ``after``."""
    conditions: list[str] = ["TRUE"]
    params: list[object] = []
    if batch is not None:
        conditions.append("batch = ?")
        params.append(batch)
    per_stage = {
        str(s): int(n)
        for s, n in connection.execute(
            f"SELECT stage, count(*) FROM synthesis_rejects WHERE {' AND '.join(conditions)} "
            "GROUP BY stage ORDER BY stage",
            params,
        ).fetchall()
    }
    if stage is not None:
        conditions.append("stage = ?")
        params.append(stage)
    if after is not None:
        conditions.append(f"(batch, stage, {_REJECT_KEY}) > (?, ?, ?)")
        params += list(after)
    rows = [
        RejectRow(str(b), str(s), c, str(t), str(m), str(r), [str(p) for p in parents], d, str(k))
        for b, s, c, t, m, r, parents, d, k in connection.execute(
            f"SELECT batch, stage, candidate_id, task_type, mutation, {_cut('reason')}, parent_task_ids, "
            f"{_cut('description')}, "
            f"{_REJECT_KEY} AS key FROM synthesis_rejects WHERE {' AND '.join(conditions)} "
            f"ORDER BY batch, stage, key LIMIT {int(limit) + 1}",
            params,
        ).fetchall()
    ]
    more = len(rows) > limit
    rows = rows[:limit]
    return RejectPage(rows, per_stage, (rows[-1].batch, rows[-1].stage, rows[-1].key) if more and rows else None)


def synthesis_counts(connection: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, dict[str, int]]]:
    """Per batch: its accepted synthesized tasks and its rejects per stage."""
    counts: dict[str, tuple[int, dict[str, int]]] = {}
    for batch, accepted in connection.execute(
        "SELECT batch, count(*) FROM synthesized_tasks GROUP BY batch"
    ).fetchall():
        counts[str(batch)] = (int(accepted), {})
    for batch, stage, n in connection.execute(
        "SELECT batch, stage, count(*) FROM synthesis_rejects GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        counts.setdefault(str(batch), (0, {}))[1][str(stage)] = int(n)
    return counts
