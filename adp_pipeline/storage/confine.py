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
  by ``COPY`` or ``ATTACH``, so this check is what protects the lake itself. A ``--where``
  condition is parsed as one expression, never pasted into SQL text.
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import duckdb

from runtimes.core import RefusedError

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
        RefusedError: more or fewer than one statement, a statement that is not a read,
            or a call of a table function that is not a read or of a function with side
            effects; the message names it and says why.
        duckdb.ParserException: ``sql`` is not SQL DuckDB can parse.
    """
    statements = duckdb.extract_statements(sql)
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
    _refuse_calls(_parse_tree(sql), "the query")
    return sql


def read_condition(where: str) -> duckdb.Expression:
    """``where`` parsed as one SQL expression (it cannot close the query it filters), checked
    like a query's calls.

    Raises:
        RefusedError: not one expression (a ``)`` that closes the wrapper, a ``;``, a list,
            a modifier), or a call refused as in :func:`read_statement`.
    """
    try:
        expression = duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        raise RefusedError(f"refused: --where must be one SQL expression ({_first_line(exc)})") from None
    # SQLExpression parses "SELECT " + where and checks it is one bare expression; the tree of
    # the same text lists its calls.
    _refuse_calls(_parse_tree(f"SELECT {where}"), "--where")
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


def _parse_tree(sql: str) -> object:
    with _parser() as connection:
        row = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {"error": True, "error_message": "no result"}
    if tree.get("error"):
        raise RefusedError(f"refused: adp cannot check this statement ({tree.get('error_message')})")
    return tree


def _refuse_calls(tree: object, what: str) -> None:
    for name, is_table_function in _calls(tree):
        if is_table_function and name not in READ_TABLE_FUNCTIONS:
            raise RefusedError(
                f"refused: {what} calls the table function {name}(), which is not a read of the lake; "
                f"table functions allowed: {', '.join(sorted(READ_TABLE_FUNCTIONS))}"
            )
        if not is_table_function and name in _side_effect_functions():
            raise RefusedError(f"refused: {what} calls {name}(), a function with side effects")


def _calls(node: object) -> Iterator[tuple[str, bool]]:
    """Every function named in a ``json_serialize_sql`` tree: (name, called as a table function)."""
    if isinstance(node, list):
        for item in node:
            yield from _calls(item)
    elif isinstance(node, dict):
        function = node.get("function") if node.get("type") == "TABLE_FUNCTION" else None
        if isinstance(function, dict):
            yield str(function.get("function_name", "")).lower(), True
            yield from _calls({key: value for key, value in function.items() if key != "function_name"})
        elif "function_name" in node:
            yield str(node["function_name"]).lower(), False
        for value in node.values():
            if value is not function:
                yield from _calls(value)


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
