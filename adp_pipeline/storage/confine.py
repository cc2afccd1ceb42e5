"""DuckDB connections confined to the lake, and the one read statement a person may run on them.

Only adp writes the lake (DESIGN.md §11). Two layers keep it so for every reader — `adp
query`, `adp export --where`, the dbt project, adp's own assets:

- **The connection** reaches no file outside the directories it is given (the lake):
  ``enable_external_access = false`` with ``allowed_directories``, then
  ``lock_configuration = true`` so that no statement can widen it again. Extensions cannot
  be installed or loaded, Python objects are not scanned, and the spill directory is private
  to the connection. DuckDB sets these only once a database is running, so they are set by
  statements, after whatever the connection must attach while it still can.
- **The statement** a person writes is one read: a single ``SELECT`` (``WITH``, ``FROM``,
  ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` parse as one), whose table functions are
  reads and whose functions have no side effects. An allowed directory can still be written
  by ``COPY`` or ``ATTACH``, so this check is what protects the lake itself. Text that nests
  deeper than adp checks, or that DuckDB cannot parse, is refused before anything runs.
- **A ``--where`` condition** is one bare expression. DuckDB's relation API pastes an
  expression's source text back into the SQL it runs (``WHERE (<text>)``), so that very text,
  in that very place, is parsed again and must give the same lone expression.
- **Resources**: a person's query runs with :class:`QueryLimits` (memory, spill, threads) and
  is interrupted past its time (:func:`within_limits`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from runtimes.core import QueryLimitError, RefusedError
from runtimes.settings import Settings

# Table functions a query may call: generators, JSON walkers, the catalog's own introspection
# and Parquet reads (which the connection confines to the lake). Anything else is refused,
# so a table function DuckDB adds later (or one that checkpoints, logs, profiles, manages
# resources or runs SQL text: ``query``, ``json_execute_serialized_sql``) is refused too.
READ_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "json_each",
        "json_tree",
        "glob",
        "read_parquet",
        "parquet_scan",
        "parquet_metadata",
        "parquet_schema",
        "parquet_file_metadata",
        "parquet_kv_metadata",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_table_info",
        "pragma_show",
        "pragma_version",
        "pragma_platform",
        "pragma_database_size",
        "pragma_storage_info",
        "pragma_collations",
    }
)
# Functions DuckDB marks as having side effects whose only effect is a value that changes
# from call to call; every other function with side effects (nextval, setval, setseed,
# write_log, sleep_ms, and any DuckDB adds) is refused.
_HARMLESS_SIDE_EFFECTS = frozenset(
    {
        "random",
        "uuid",
        "uuidv4",
        "uuidv7",
        "gen_random_uuid",
        "current_query",
        "current_query_id",
        "current_transaction_id",
        "current_connection_id",
        "vector_type",
        "stats",
        "error",
    }
)
_READS = "SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW or SUMMARIZE"
# Brackets a person's text may nest. DuckDB's parser recurses once per nested subquery with no
# limit of its own (it crashes the process past some 60,000 levels) and Python's JSON reader
# stops near 1,000 levels of the parse tree: no query anyone writes comes close to this.
MAX_NESTING = 128
_OPENING, _CLOSING = b"([{", b")]}"
# Where a parse tree says which characters a node came from: the same expression parsed from
# another text differs only there.
_LOCATION_KEYS = frozenset({"query_location", "query_location_length"})
# Why each kind of statement is refused (the rest: "it is not a read").
_WHY: dict[str, str] = {
    "COPY": "COPY reads and writes files",
    "ATTACH": "ATTACH opens or creates another database",
    "DETACH": "DETACH closes a database",
    "EXPORT": "EXPORT DATABASE writes files",
    "LOAD": "INSTALL and LOAD add extensions",
    "SET": "SET, RESET and USE change the connection's settings",
    "VARIABLE_SET": "SET VARIABLE changes the connection's state",
    "PRAGMA": "PRAGMA (and IMPORT DATABASE, COPY FROM DATABASE) changes settings or writes",
    "CALL": "CALL runs table functions that may change state",
    "EXPLAIN": "EXPLAIN ANALYZE runs the statement it explains; DESCRIBE or SUMMARIZE show a query's shape",
    "MULTI": "a PIVOT without IN (...) runs several statements; list the values",
    "CREATE": "CREATE changes the catalog",
    "INSERT": "INSERT changes data",
    "UPDATE": "UPDATE changes data",
    "DELETE": "DELETE and TRUNCATE change data",
    "MERGE_INTO": "MERGE changes data",
    "DROP": "DROP changes the catalog",
    "ALTER": "ALTER and COMMENT ON change the catalog",
    "TRANSACTION": "transactions are adp's to manage",
    "VACUUM": "VACUUM and ANALYZE write",
    "PREPARE": "PREPARE and EXECUTE run statements this check cannot see",
    "EXECUTE": "PREPARE and EXECUTE run statements this check cannot see",
}


@dataclass(frozen=True)
class QueryLimits:
    """What one person's query may use: DuckDB's memory, the disk it spills to, its threads,
    and the time it runs (ADP_QUERY_MEMORY_MB, ADP_QUERY_TEMP_MB, ADP_QUERY_THREADS,
    ADP_QUERY_TIMEOUT_SECONDS: messages name these settings)."""

    memory_mb: int
    temp_mb: int
    threads: int
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(
            memory_mb=settings.query_memory_mb,
            temp_mb=settings.query_temp_mb,
            threads=settings.query_threads,
            timeout_seconds=settings.query_timeout_seconds,
        )

    def duckdb_settings(self) -> dict[str, str | int | bool]:
        """The settings :func:`confine` applies before it locks the configuration."""
        return {
            "memory_limit": f"{self.memory_mb}MB",
            "max_temp_directory_size": f"{self.temp_mb}MB",
            "threads": self.threads,
        }


@contextlib.contextmanager
def within_limits(
    connection: duckdb.DuckDBPyConnection, limits: QueryLimits, what: str = "the query", *, timed: bool = True
) -> Iterator[None]:
    """Run the block's work on ``connection`` (confined with ``limits.duckdb_settings()``) under
    ``limits``: past ``timeout_seconds`` (when ``timed``) DuckDB is interrupted; a timeout, or
    running out of the memory and spill space it was given, is a QueryLimitError that says
    which setting to raise.

    Raises:
        QueryLimitError: as above; ``what`` names the query or export.
    """
    stopped = threading.Event()

    def interrupt() -> None:
        stopped.set()
        with contextlib.suppress(duckdb.Error):  # the block ended (and closed it) meanwhile
            connection.interrupt()

    timer = threading.Timer(limits.timeout_seconds, interrupt) if timed else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield
    except duckdb.InterruptException:
        if not stopped.is_set():
            raise
        raise QueryLimitError(
            f"{what} ran longer than {limits.timeout_seconds:g} s and was stopped (ADP_QUERY_TIMEOUT_SECONDS)"
        ) from None
    except duckdb.OutOfMemoryException as exc:
        raise QueryLimitError(
            f"{what} needs more than the {limits.memory_mb} MB of memory (ADP_QUERY_MEMORY_MB) and "
            f"{limits.temp_mb} MB of spill space (ADP_QUERY_TEMP_MB) it may use: {_first_line(exc)}"
        ) from None
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()  # an interrupt under way ends before the connection can close


def confine(
    connection: duckdb.DuckDBPyConnection,
    directories: Iterable[Path],
    *,
    files: Iterable[Path] = (),
    settings: Mapping[str, str | int | bool] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Limit ``connection``'s file access to ``directories`` and ``files``, apply ``settings``,
    and lock its configuration; return it.

    Its own database file (and WAL) stays reachable; a private, initially absent spill
    directory is added by DuckDB itself. Whatever the connection must attach from elsewhere
    (the catalog, dbt's database) it attaches before this call, or names in ``files``.
    """
    statements = [
        f"SET temp_directory = {_literal(str(Path(tempfile.gettempdir()) / f'adp-duckdb-{uuid.uuid4().hex}'))}",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET allow_community_extensions = false",
        "SET python_enable_replacements = false",
        *(f"SET {name} = {_literal(value)}" for name, value in (settings or {}).items()),
        # A trailing separator: "/data/lake" as a bare prefix would also allow "/data/lake2".
        f"SET allowed_directories = {_list(str(Path(d).absolute()).rstrip('/') + '/' for d in directories)}",
        f"SET allowed_paths = {_list(str(Path(f).absolute()) for f in files)}",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ]
    for statement in statements:
        connection.execute(statement)
    return connection


def confined_connection(
    directories: Iterable[Path],
    *,
    prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    settings: Mapping[str, str | int | bool] | None = None,
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB, given ``prepare`` (to attach what it reads) and then confined.

    In memory, so that it is a database of its own: DuckDB shares one database, and so one
    configuration, between connections to the same file in a process.
    """
    connection = duckdb.connect()
    try:
        if prepare is not None:
            prepare(connection)
        return confine(connection, directories, settings=settings)
    except BaseException:
        connection.close()
        raise


def read_statement(sql: str) -> str:
    """``sql`` when it is exactly one read statement, checked before anything runs.

    Raises:
        RefusedError: text DuckDB cannot parse or adp cannot check (not UTF-8, nested deeper
            than :data:`MAX_NESTING` brackets or than DuckDB's and Python's parsers go), more
            or fewer than one statement, a statement that is not a read, or a call of a table
            function that is not a read or of a function with side effects; the message names
            it and says why.
    """
    _refuse_uncheckable_text(sql, "the query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.ParserException as exc:  # a syntax error, or past DuckDB's own nesting limits
        raise RefusedError(f"refused: the query is not SQL adp can parse and check ({_first_line(exc)})") from None
    if len(statements) != 1:
        found = "no statement" if not statements else f"{len(statements)} statements"
        raise RefusedError(f"refused: {found}; a query is exactly one read statement ({_READS})")
    try:
        kind = statements[0].type.name
    except ValueError:  # a statement kind this DuckDB's Python API has no name for
        kind = "unknown"
    if kind != "SELECT":
        why = _WHY.get(kind, "it is not a read")
        raise RefusedError(f"refused: {kind} statement ({why}); a query is one read statement ({_READS})")
    with _parser() as connection:
        _refuse_calls(_parse_tree(connection, sql, "the query"), "the query")
    return sql


def read_condition(where: str) -> duckdb.Expression:
    """``where`` parsed as one bare SQL expression (it cannot close the query it filters),
    checked like a query's calls; for ``relation.filter`` only.

    DuckDB 2.0 keeps an expression's source text (``str(expression)``) and ``filter`` pastes
    it into the SQL it runs as ``WHERE (<text>)``. So the condition is accepted only when
    ``SELECT <where>`` is a select list of that one expression and nothing else (no clause, no
    alias), when ``SELECT (<where>)`` is the same expression (a ``WINDOW`` clause, which the
    parse tree does not keep, cannot be wrapped), and when the pasted text itself parses, in
    place, to the same expression: what runs is what was checked.

    Raises:
        RefusedError: not one expression (a ``)`` that closes the wrapper, a ``;``, a list, a
            clause, an alias), text adp cannot check (as in :func:`read_statement`), or a call
            refused as in :func:`read_statement`.
    """
    _refuse_uncheckable_text(where, "--where")
    try:
        expression = duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        raise RefusedError(f"refused: --where must be one SQL expression ({_first_line(exc)})") from None
    with _parser() as connection:
        tree = _parse_tree(connection, f"SELECT {where}", "--where")
        condition = _lone_expression(tree, "SELECT NULL", "select_list")
        if condition is None:
            raise RefusedError(
                "refused: --where must be one SQL expression and nothing else "
                "(no clause, alias, parameter or second part)"
            )
        # A newline before the parenthesis: a trailing -- comment must not swallow it.
        wrapped = _parse_tree(connection, f"SELECT ({where}\n)", "--where", refuse_errors=False)
        if _lone_expression(wrapped, "SELECT NULL", "select_list") != condition:
            raise RefusedError(
                "refused: --where must be one SQL expression and nothing else: in parentheses it is not "
                "the same expression (a WINDOW clause, an alias, a second part?)"
            )
        pasted = _parse_tree(connection, f"SELECT * FROM t WHERE ({expression})", "--where", refuse_errors=False)
        if _lone_expression(pasted, "SELECT * FROM t WHERE NULL", "where_clause") != condition:
            raise RefusedError(
                "refused: --where must be one SQL expression: the text DuckDB would run for it "
                "is not the expression adp checked"
            )
        _refuse_calls(tree, "--where")
    return expression


@contextlib.contextmanager
def outside_the_lake_refused(what: str) -> Iterator[None]:
    """Turn DuckDB's refusal to touch a file outside the allowed directories into a
    RefusedError that says so (``what`` names the query or condition)."""
    try:
        yield
    except duckdb.PermissionException as exc:
        reason = _first_line(exc).removeprefix("Permission Error: ")
        raise RefusedError(f"refused: {what} reaches outside the lake ({reason})") from None


def _refuse_uncheckable_text(text: str, what: str) -> None:
    """Refuse text that is not UTF-8 (DuckDB's binding cannot take it) or nests brackets deeper
    than :data:`MAX_NESTING`, before DuckDB's parser recurses into it."""
    try:
        encoded = text.encode()
    except UnicodeEncodeError as exc:
        raise RefusedError(f"refused: {what} is not UTF-8 text (character {exc.start + 1} is not)") from None
    depth = deepest = 0
    # DuckDB's own tokenizer tells brackets from the characters of strings, names and comments.
    for position, kind in duckdb.tokenize(text):
        if kind == duckdb.token_type.operator:
            character = encoded[position : position + 1]
            if character in _OPENING:
                depth += 1
                deepest = max(deepest, depth)
            elif character in _CLOSING:
                depth -= 1
    if deepest > MAX_NESTING:
        raise RefusedError(f"refused: {what} nests brackets {deepest} deep; adp checks at most {MAX_NESTING}")


def _parse_tree(
    connection: duckdb.DuckDBPyConnection, sql: str, what: str, *, refuse_errors: bool = True
) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql``; one with ``error`` set is refused (or returned when
    ``refuse_errors`` is false)."""
    row = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    try:
        tree = json.loads(row[0]) if row else {"error": True, "error_message": "no result"}
    except RecursionError:  # deeper than Python's parser goes: without brackets (NOT NOT ..., 1+1+...)
        raise RefusedError(f"refused: {what} is nested too deeply for adp to check") from None
    if not isinstance(tree, dict) or (refuse_errors and tree.get("error")):
        message = tree.get("error_message") if isinstance(tree, dict) else "no parse tree"
        raise RefusedError(f"refused: adp cannot check {what} ({message})")
    return tree


def _lone_expression(tree: dict[str, Any], reference_sql: str, place: str) -> object | None:
    """The one expression at ``place`` (``select_list``: alone and without alias;
    ``where_clause``) of ``tree`` when its only statement is ``reference_sql`` with that
    expression in place, and nothing else; None otherwise. Compared without locations."""
    statements = tree.get("statements") if not tree.get("error") else None
    if not isinstance(statements, list) or len(statements) != 1 or not isinstance(statements[0], dict):
        return None
    node = _without_locations(statements[0])
    expression = node.get("node", {}).pop(place, None) if isinstance(node.get("node"), dict) else None
    if place == "select_list":
        if not isinstance(expression, list) or len(expression) != 1:
            return None
        (expression,) = expression
    if not isinstance(expression, dict) or expression.get("alias") != "" or node != _reference(reference_sql, place):
        return None
    return expression


@functools.cache
def _reference(sql: str, place: str) -> object:
    """The statement of ``sql`` without locations and without what is at ``place``."""
    with _parser() as connection:
        (statement,) = _parse_tree(connection, sql, "adp's reference")["statements"]
    node = _without_locations(statement)
    node["node"].pop(place)
    return node


def _without_locations(tree: object) -> Any:
    """A copy of a ``json_serialize_sql`` tree without :data:`_LOCATION_KEYS`, built with an
    explicit stack: a tree may be deeper than Python's recursion goes."""
    root: list[Any] = [None]
    stack: list[tuple[object, Any, object]] = [(tree, root, 0)]
    while stack:
        node, parent, key = stack.pop()
        if isinstance(node, dict):
            copy: Any = {}
            stack.extend((value, copy, name) for name, value in node.items() if name not in _LOCATION_KEYS)
        elif isinstance(node, list):
            copy = [None] * len(node)
            stack.extend((item, copy, index) for index, item in enumerate(node))
        else:
            copy = node
        parent[key] = copy
    return root[0]


def _refuse_calls(tree: object, what: str) -> None:
    for name, is_table_function in _calls(tree):
        if is_table_function and name not in READ_TABLE_FUNCTIONS:
            raise RefusedError(
                f"refused: {what} calls the table function {name}(), which is not a read of the lake; "
                f"table functions allowed: {', '.join(sorted(READ_TABLE_FUNCTIONS))}"
            )
        if not is_table_function and name in _side_effect_functions():
            raise RefusedError(f"refused: {what} calls {name}(), a function with side effects")


def _calls(tree: object) -> Iterator[tuple[str, bool]]:
    """Every function named in a ``json_serialize_sql`` tree: (name, called as a table function).

    Walked with an explicit stack: a tree may be deeper than Python's recursion goes."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            function = node.get("function") if node.get("type") == "TABLE_FUNCTION" else None
            if isinstance(function, dict):
                yield str(function.get("function_name", "")).lower(), True
                stack.extend(value for key, value in function.items() if key != "function_name")
            elif "function_name" in node:
                yield str(node["function_name"]).lower(), False
            stack.extend(value for value in node.values() if value is not function)


@functools.cache
def _side_effect_functions() -> frozenset[str]:
    with _parser() as connection:
        rows = connection.execute("SELECT DISTINCT function_name FROM duckdb_functions() WHERE has_side_effects")
        return frozenset(str(name).lower() for (name,) in rows.fetchall()) - _HARMLESS_SIDE_EFFECTS


def _parser() -> duckdb.DuckDBPyConnection:
    """A connection that only parses and lists functions: confined to nothing."""
    return confined_connection([])


def _literal(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_literal(value) for value in values) + "]"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
