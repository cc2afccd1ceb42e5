"""The trajectories list's query string: parsed and checked in one pydantic model, written back
into every link (so paging, a trajectory and its previous/next keep the filter), and the filter
form (a plain GET form: the CSP allows no script).

A value the page cannot take is a :class:`BadParameter` naming the parameter and, for one of a
fixed set, the values it can take; the app answers it with a 400 page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from pydantic import ValidationError, ValidationInfo, field_validator

from adp_pipeline.storage.view_queries import (
    NO_ERROR_TYPE,
    Cursor,
    FilterChoices,
    Neighbours,
    SortKey,
    SortOrder,
    TrajectoryFilter,
    VerifiedFilter,
    cursor_value,
)
from adp_pipeline.view.html import href, text

# The parameters that take one of a fixed set of values, with those values (a bad one is named
# with them in the 400 page).
FIXED_VALUES: dict[str, tuple[str, ...]] = {
    "success": ("true", "false"),
    "verified": tuple(v.value for v in VerifiedFilter),
    "sort": tuple(v.value for v in SortKey),
    "order": tuple(v.value for v in SortOrder),
}
_CURSOR = ("after_value", "after_batch", "after_task")
_DEFAULT = TrajectoryFilter()


class BadParameter(ValueError):
    """A query parameter the page cannot take: ``name`` and what is wrong (plain text)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class TrajectoryQuery(TrajectoryFilter):
    """The trajectories list's query string: the filter and order, and where the page starts
    (``after_*``: the previous page's last key; ``after_value`` absent: that row had no value)."""

    after_value: str | None = None
    after_batch: str | None = None
    after_task: str | None = None

    @field_validator("after_value")
    @classmethod
    def _value_of_the_sort(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and "sort" in info.data:
            cursor_value(info.data["sort"], value)  # raises ValueError: not a value of this sort
        return value

    def filter(self) -> TrajectoryFilter:
        """The filter and order alone."""
        return TrajectoryFilter.model_validate(self.model_dump(include=set(TrajectoryFilter.model_fields)))

    def cursor(self) -> Cursor | None:
        """The key the page starts after, None for the first page (or a half-given key)."""
        if self.after_batch is None or self.after_task is None:
            return None
        return Cursor(cursor_value(self.sort, self.after_value), self.after_batch, self.after_task)


def parse_query(params: Iterable[tuple[str, str]], *, only_filter: bool = False) -> TrajectoryQuery:
    """The trajectories query in ``params`` (a query string's items, repeats included).

    Args:
        only_filter: read the filter's parameters and leave the rest to another part of the page
            (the trajectory page has its own); otherwise an unknown parameter is refused.

    Raises:
        BadParameter: a parameter given twice, unknown, or with a value it cannot take.
    """
    names = set(TrajectoryQuery.model_fields)
    given: dict[str, str] = {}
    for name, value in params:
        if only_filter and name not in set(TrajectoryFilter.model_fields):
            continue
        if name in given:
            raise BadParameter(name, "is given more than once")
        given[name] = value
    try:
        return TrajectoryQuery.model_validate(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "the query"
        if error["type"] == "extra_forbidden":
            raise BadParameter(name, "is not a parameter of this page; it takes " + ", ".join(sorted(names))) from None
        shown = repr(given.get(name, ""))
        shown = shown if len(shown) <= 80 else shown[:79] + "…"  # a long value is echoed in part
        if name in FIXED_VALUES:
            raise BadParameter(name, f"cannot be {shown}; it is one of: {', '.join(FIXED_VALUES[name])}") from None
        problem = str(error["msg"]).removeprefix("Value error, ")
        raise BadParameter(name, f"cannot be {shown}: {problem}") from None


def filter_params(where: TrajectoryFilter) -> dict[str, str]:
    """``where`` as query-string values, its defaults left out (what every link carries)."""
    params: dict[str, str] = {}
    for name in TrajectoryFilter.model_fields:
        value = getattr(where, name)
        if value is None or value == getattr(_DEFAULT, name):
            continue
        params[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return params


def cursor_params(cursor: Cursor) -> dict[str, str]:
    """The ``after_*`` values of a next-page link (no ``after_value``: the row had none)."""
    value = "" if cursor.value is None else repr(cursor.value) if isinstance(cursor.value, float) else str(cursor.value)
    return dict(zip(_CURSOR, (value, cursor.batch, cursor.task_id), strict=True))


def _select(name: str, label: str, current: str, options: Sequence[tuple[str, str]]) -> str:
    values = {value for value, _ in options}
    if current and current not in values:  # a value from a link that the lake no longer holds
        options = [*options, (current, current)]
    shown = "".join(
        f'<option value="{text(value)}"{" selected" if value == current else ""}>{text(shown)}</option>'
        for value, shown in options
    )
    return f"<label>{text(label)} <select name={name}>{shown}</select></label>"


def filter_form(where: TrajectoryFilter, choices: FilterChoices) -> str:
    """The filter form, each select holding the lake's values with ``where``'s selected."""
    current = filter_params(where)

    def any_of(values: Iterable[object]) -> list[tuple[str, str]]:
        return [("", "any")] + [(str(v), str(v)) for v in values]

    errors = [(e, "none (no error type)" if e == NO_ERROR_TYPE else e) for e in choices.error_types]
    sort_labels = {
        SortKey.CREATED: "time",
        SortKey.TASK_ID: "task id",
        SortKey.BATCH: "batch",
        SortKey.DURATION: "duration",
        SortKey.STEPS: "steps",
        SortKey.TOKENS: "tokens",
    }
    parts = [
        _select("batch", "batch", current.get("batch", ""), any_of(choices.batches)),
        _select("task_type", "type", current.get("task_type", ""), any_of(choices.task_types)),
        _select(
            "success", "success", current.get("success", ""), [("", "any"), ("true", "succeeded"), ("false", "failed")]
        ),
        _select(
            "verified",
            "verified",
            current.get("verified", ""),
            [("", "any"), ("true", "passed"), ("false", "failed"), ("none", "no verifier")],
        ),
        _select("error_type", "error type", current.get("error_type", ""), [("", "any"), *errors]),
        _select("policy", "policy", current.get("policy", ""), any_of(choices.policies)),
        _select("model", "model", current.get("model", ""), any_of(choices.models)),
        _select("generation", "generation", current.get("generation", ""), any_of(choices.generations)),
        f'<label>search <input type=search name=search value="{text(where.search)}" '
        'placeholder="task id or description"></label>',
        _select("sort", "sort by", where.sort.value, [(k.value, label) for k, label in sort_labels.items()]),
        _select("order", "order", where.order.value, [("desc", "descending"), ("asc", "ascending")]),
    ]
    return (
        '<form class=filter method=get action="/trajectories">'
        + "".join(parts)
        + "<button type=submit>Filter</button></form>"
    )


def trajectory_link(where: TrajectoryFilter, batch: str, task_id: str) -> str:
    """The escaped link to a trajectory's page that keeps ``where`` (for its previous/next)."""
    return href(["trajectories", batch, task_id], filter_params(where))


def neighbour_nav(where: TrajectoryFilter, found: Neighbours) -> str:
    """Links to the previous and next trajectory in ``where``'s list, and to the list itself."""
    parts = []
    if found.previous is not None:
        parts.append(f'<a rel=prev class=previous href="{trajectory_link(where, *found.previous)}">← previous</a>')
    parts.append(f'<a class=list href="{href(["trajectories"], filter_params(where))}">the list</a>')
    if found.next is not None:
        parts.append(f'<a rel=next class=next href="{trajectory_link(where, *found.next)}">next →</a>')
    return "<nav class=neighbours>" + " · ".join(parts) + "</nav>"


def when(created_at: datetime | None) -> str:
    """A trajectory's time as the list shows it (UTC, to the second)."""
    return "" if created_at is None else created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
