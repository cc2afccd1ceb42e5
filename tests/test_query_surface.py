"""The query surface reads the lake and nothing else (DESIGN.md §11): `adp query`, `adp export
--where`, dbt and every reader open DuckDB confined to the lake, a query is one read statement,
a condition is one expression, the catalog rebuilds a view that is not its own, and an export
never lands on adp's own files. Each attack of issue #17 is run against a real data dir."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner, Result

from adp_pipeline.cli import main
from adp_pipeline.export import sidecar_path
from adp_pipeline.storage import (
    MAX_NESTING,
    Lake,
    RefusedError,
    catalog_path,
    confined_connection,
    ensure_catalog,
    open_catalog,
    quality_path,
    read_condition,
    read_statement,
)
from adp_pipeline.storage.dbt_plugin import Plugin
from adp_pipeline.storage.tables import DERIVED_VIEWS, TABLES
from tests.helpers import REPO, adp, code_task

SECRET = "sk-proj-planted-secret-0123456789"
FORGED = "forged"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir as `adp run` and `adp nightly` leave it: two verified tasks, one failed, the
    catalog, dbt's marts. Every attack below is refused, so the tests can share it."""
    root = tmp_path_factory.mktemp("surface")
    tasks = root / "batch.jsonl"
    lines = [code_task("square", "print(4)", "4"), code_task("cube", "print(8)", "8")]
    lines.append(code_task("wrong", "print(1)", "1", tests="assert False"))
    tasks.write_text("\n".join(lines) + "\n")
    env = {"ADP_POLICY": "oracle", "TASKS_DIR": str(root / "inbox")}
    for command in (["run", str(tasks)], ["nightly"]):
        done = adp(*command, "--data-dir", str(root / "data"), env=env)
        assert done.returncode == 0, done.stderr
    return root / "data"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def query(data: Path, sql: str) -> Result:
    return cli("query", sql, "--data-dir", str(data), "--format", "json")


def refused(result: Result, *words: str) -> None:
    """One clear line naming what was refused and why, last on stderr, exit 2, nothing on stdout."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("adp: error:")]
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    assert errors[0].startswith("adp: error: refused: ") and all(word in errors[0] for word in words), errors
    assert result.stdout == ""


def files_under(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: the proof that nothing was written."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def exported_ids(path: Path) -> set[str]:
    """The task ids of an export (openai's are in its metadata file beside it)."""
    metadata = sidecar_path(path)
    lines = (metadata if metadata.exists() else path).read_text(encoding="utf-8").split("\n")
    return {json.loads(line)["task_id"] for line in lines if line}


# --- the attacks of issue #17, through the CLI ------------------------------------------------


@pytest.mark.parametrize("inside_lake", [False, True], ids=["outside", "into-the-lake"])
def test_copy_to_a_file_is_refused_and_writes_nothing(data: Path, tmp_path: Path, inside_lake: bool) -> None:
    target = (
        data / "lake" / "tasks" / "batch=copied" / "data.parquet" if inside_lake else tmp_path / "out" / "stolen.csv"
    )
    before = files_under(data)
    result = query(data, f"COPY (SELECT * FROM trajectories) TO '{target}'")
    refused(result, "COPY statement", "writes files")
    assert not target.exists() and not target.parent.exists()
    assert files_under(data) == before


def test_attach_read_write_creates_no_database_and_leaves_another_data_dirs_views(data: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(data, other)
    ensure_catalog(other)
    other_catalog = catalog_path(other).read_bytes()
    created = tmp_path / "created.duckdb"

    refused(query(data, f"ATTACH '{created}' AS created (READ_WRITE)"), "ATTACH statement", "another database")
    refused(query(data, f"ATTACH '{catalog_path(other)}' AS victim (READ_WRITE)"), "ATTACH statement")
    # The statement that replaced the views, with the database already attached, and both at once.
    refused(query(data, "CREATE OR REPLACE VIEW victim.main.trajectories AS SELECT 1"), "CREATE statement")
    attach_and_replace = f"ATTACH '{catalog_path(other)}' AS v; CREATE OR REPLACE VIEW v.main.tasks AS SELECT 1"
    refused(query(data, attach_and_replace), "2 statements")

    assert not created.exists() and not created.with_name("created.duckdb.wal").exists()
    assert catalog_path(other).read_bytes() == other_catalog
    assert json.loads(query(other, "SELECT count(*) AS n FROM trajectories").stdout) == [{"n": 3}]


def test_a_query_cannot_read_env_or_etc_passwd(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={SECRET}\n")
    (tmp_path / "secrets.csv").write_text(f"key\n{SECRET}\n")
    pq.write_table(pa.table({"key": [SECRET]}), tmp_path / "secrets.parquet")
    monkeypatch.chdir(tmp_path)
    attempts = {
        "SELECT * FROM read_text('.env')": "read_text()",
        f"SELECT * FROM read_text('{tmp_path / '.env'}')": "read_text()",
        "SELECT * FROM read_csv('/etc/passwd', sep = ':')": "read_csv()",
        "SELECT content FROM read_blob('/etc/passwd')": "read_blob()",
        # Past the statement check, the connection itself refuses: a replacement scan of a
        # path, and Parquet (which a query may read, in the lake) outside it.
        "SELECT * FROM 'secrets.csv'": "reaches outside the lake",
        f"SELECT * FROM read_parquet('{tmp_path / 'secrets.parquet'}')": "reaches outside the lake",
        f"SELECT * FROM read_parquet('{data / 'lake'}/../../secrets.parquet')": "reaches outside the lake",
        "SELECT * FROM glob('/etc/*')": "reaches outside the lake",
    }
    for sql, reason in attempts.items():
        result = query(data, sql)
        refused(result, reason)
        assert SECRET not in result.stderr and "root:" not in result.stderr


@pytest.mark.parametrize(
    "where",
    [
        "1=1) ; COPY (SELECT * FROM trajectories) TO '{target}' --",
        "true) UNION ALL SELECT * FROM trajectories WHERE (true",
        "true)) ; COPY (SELECT 1) TO '{target}' ; SELECT ((true",
        "task_type = 'code'; COPY (SELECT 1) TO '{target}'",
    ],
    ids=["stacked-copy", "union", "double-paren", "semicolon"],
)
def test_a_where_condition_that_closes_its_wrapper_is_refused_before_anything_runs(
    data: Path, tmp_path: Path, where: str
) -> None:
    target = tmp_path / "pwned.csv"
    out = tmp_path / "train.jsonl"
    before = files_under(data)
    result = cli("export", "--out", str(out), "--where", where.format(target=target), "--data-dir", str(data))
    refused(result, "--where must be one SQL expression")
    assert not target.exists() and not out.exists()
    assert files_under(data) == before


def test_a_where_condition_reads_nothing_but_the_lake(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    pq.write_table(pa.table({"task_id": ["square"]}), tmp_path / "ids.parquet")
    attempts = {
        "task_id IN (SELECT content FROM read_text('/etc/passwd'))": "read_text()",
        "task_id IN (SELECT * FROM query('SELECT 1'))": "query()",
        "nextval('s') > 0": "nextval()",
        f"task_id IN (SELECT task_id FROM read_parquet('{tmp_path / 'ids.parquet'}'))": "reaches outside the lake",
    }
    for where, reason in attempts.items():
        refused(cli("export", "--out", str(out), "--where", where, "--data-dir", str(data)), reason)
        assert not out.exists()
    # A condition with a subquery on the lake is still one expression, and works.
    ok = cli("export", "--out", str(out), "--where", "task_id IN (SELECT task_id FROM tasks WHERE task_id = 'cube')",
             "--data-dir", str(data))  # fmt: skip
    assert ok.exit_code == 0, ok.stderr
    assert exported_ids(out) == {"cube"}


def test_a_forged_verified_trajectory_cannot_be_planted_so_export_never_ships_it(data: Path, tmp_path: Path) -> None:
    partition = data / "lake" / "trajectories" / f"batch={FORGED}-00000000"
    forge = (
        f"COPY (SELECT * EXCLUDE (batch) REPLACE ('{FORGED}' AS task_id, true AS success, true AS verified) "
        f"FROM trajectories LIMIT 1) TO '{partition / 'data.parquet'}' (FORMAT parquet)"
    )
    refused(query(data, forge), "COPY statement")
    refused(query(data, f"SELECT 1; {forge}"), "2 statements")
    refused(query(data, f"EXPLAIN ANALYZE {forge}"), "EXPLAIN statement")
    where = f"true) ; {forge} --"
    refused(cli("export", "--out", str(tmp_path / "x.jsonl"), "--where", where, "--data-dir", str(data)))
    assert not partition.exists()

    out = tmp_path / "train.jsonl"
    shipped = cli("export", "--out", str(out), "--data-dir", str(data))
    assert shipped.exit_code == 0, shipped.stderr
    assert exported_ids(out) == {"square", "cube"}


# --- the two layers, on their own ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY trajectories TO 'x.csv'", "COPY"),
        ("COPY tasks FROM 'x.csv'", "COPY"),
        ("EXPORT DATABASE 'x'", "EXPORT"),
        ("IMPORT DATABASE 'x'", "PRAGMA"),
        ("COPY FROM DATABASE adp TO other", "PRAGMA"),
        ("ATTACH 'x.duckdb'", "ATTACH"),
        ("DETACH quality", "DETACH"),
        ("INSTALL httpfs", "LOAD"),
        ("LOAD httpfs", "LOAD"),
        ("SET enable_external_access = true", "SET"),
        ("RESET lock_configuration", "SET"),
        ("SET VARIABLE x = 1", "SET"),
        ("USE memory", "SET"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("CREATE TEMP MACRO lower(x) AS x", "CREATE"),
        ("CREATE SECRET s (TYPE s3)", "CREATE"),
        ("INSERT INTO tasks SELECT * FROM tasks", "INSERT"),
        ("UPDATE tasks SET task_id = 'x'", "UPDATE"),
        ("DELETE FROM tasks", "DELETE"),
        ("TRUNCATE tasks", "DELETE"),
        ("DROP VIEW tasks", "DROP"),
        ("ALTER VIEW tasks RENAME TO t", "ALTER"),
        ("COMMENT ON VIEW tasks IS 'x'", "ALTER"),
        ("CALL checkpoint()", "CALL"),
        ("CHECKPOINT", "CALL"),
        ("VACUUM", "VACUUM"),
        ("BEGIN", "TRANSACTION"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
        ("EXECUTE p", "EXECUTE"),
        ("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x'", "EXPLAIN"),
        ("PIVOT tasks ON task_type", "MULTI"),
        ("UPDATE EXTENSIONS", "unknown"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("   ", "no statement"),
        ("SELECT * FROM read_text('x')", "read_text()"),
        ("SELECT * FROM read_csv_auto('x')", "read_csv_auto()"),
        ("SELECT * FROM read_json('x')", "read_json()"),
        ("SELECT * FROM query('SELECT 1')", "query()"),
        ("SELECT * FROM query_table('tasks')", "query_table()"),
        ("SELECT * FROM json_execute_serialized_sql('x')", "json_execute_serialized_sql()"),
        ("SELECT * FROM range(1), LATERAL (SELECT * FROM force_checkpoint())", "force_checkpoint()"),
        ("SELECT * FROM enable_logging()", "enable_logging()"),
        ("FROM system.main.read_blob('x')", "read_blob()"),
        ("SELECT nextval('s')", "nextval()"),
        ("SELECT setseed(0.5)", "setseed()"),
        ("WITH w AS (SELECT write_log('x')) SELECT * FROM w", "write_log()"),
        ("SELECT list_transform([1], x -> sleep_ms(x))", "sleep_ms()"),
        ("SUMMARIZE SELECT setval('s', 1)", "setval()"),
    ],
)
def test_every_statement_or_call_that_is_not_a_read_is_refused(sql: str, named: str) -> None:
    with pytest.raises(RefusedError) as refusal:
        read_statement(sql)
    assert str(refusal.value).startswith("refused: ") and named in str(refusal.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT task_id FROM tasks",
        "FROM trajectories",
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "VALUES (1), (2)",
        "DESCRIBE trajectories",
        "SHOW TABLES",
        "SUMMARIZE tasks",
        "PIVOT tasks ON task_type IN ('code', 'web') USING count(*)",
        "SELECT random(), uuid(), now()",
        "SELECT * FROM range(3), unnest([1, 2])",
        "SELECT * FROM read_parquet('lake/tasks/*/*.parquet')",
        "SELECT * FROM duckdb_views()",
    ],
)
def test_reads_pass_the_statement_check(sql: str) -> None:
    assert read_statement(sql) == sql


def test_a_condition_is_one_expression() -> None:
    condition = read_condition("task_type = 'code' AND n_steps < 5 -- a comment")
    with duckdb.connect() as connection:
        rows = connection.sql("SELECT * FROM (VALUES ('code', 3), ('code', 9), ('web', 1)) t(task_type, n_steps)")
        assert rows.filter(condition).fetchall() == [("code", 3)]
    for where in ["a, b", "a ORDER BY 1", "1 FROM tasks", "a /* unterminated", "a) OR (b", ""]:
        with pytest.raises(RefusedError, match="must be one SQL expression"):
            read_condition(where)


def test_a_confined_connection_reaches_the_lake_and_nothing_else(tmp_path: Path) -> None:
    lake, sibling = tmp_path / "data" / "lake", tmp_path / "data" / "lake2"
    for folder in (lake, sibling):
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), folder / "t.parquet")
    (tmp_path / "secret.txt").write_text(SECRET)
    secret_table = pa.table({"key": [SECRET]})  # noqa: F841  # what a Python replacement scan would find
    with confined_connection([lake]) as connection:
        assert connection.execute(f"SELECT x FROM '{lake / 't.parquet'}'").fetchall() == [(1,)]
        # "lake" must not allow "lake2": the allowed directory ends with a separator.
        for sql in (
            f"SELECT * FROM '{sibling / 't.parquet'}'",
            f"SELECT * FROM read_text('{tmp_path / 'secret.txt'}')",
            f"SELECT * FROM read_parquet('{lake}/../lake2/t.parquet')",
            f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'",
            f"ATTACH '{tmp_path / 'new.duckdb'}'",
            "LOAD httpfs",
        ):
            with pytest.raises(duckdb.PermissionException):
                connection.execute(sql)
        # The configuration cannot be widened again.
        for sql in (
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET lock_configuration = false",
            "RESET lock_configuration",
            "SET python_enable_replacements = true",
        ):
            with pytest.raises(duckdb.InvalidInputException, match="locked"):
                connection.execute(sql)
        with pytest.raises(duckdb.CatalogException):
            connection.execute("SELECT * FROM secret_table")
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "new.duckdb").exists()


def test_every_duckdb_connection_adp_opens_is_confined() -> None:
    """One way to open DuckDB: the confined helper, or a connection confined on the spot."""
    opened = {}
    for path in (REPO / "adp_pipeline").rglob("*.py"):
        for line in path.read_text().splitlines():
            if "duckdb.connect(" in line:
                opened[f"{path.relative_to(REPO)}: {line.strip()}"] = "confine(duckdb.connect(" in line
    assert opened and all(
        confined or name.startswith("adp_pipeline/storage/confine.py") for name, confined in opened.items()
    ), opened


def test_the_dbt_profile_confines_dbts_connection(tmp_path: Path) -> None:
    profile = yaml.safe_load((REPO / "dbt_quality" / "profiles.yml").read_text())
    (plugin,) = profile["adp_quality"]["outputs"]["local"]["plugins"]
    assert plugin["module"] == "adp_pipeline.storage.dbt_plugin"

    data = tmp_path / "data"
    ensure_catalog(data)
    (tmp_path / "secret.txt").write_text(SECRET)
    with duckdb.connect(str(data / "quality.duckdb")) as connection:
        Plugin("adp", {"data_dir": str(data)}).configure_connection(connection)
        # What dbt does next: attach the catalog, read its views, write its own tables.
        connection.execute(f"ATTACH '{catalog_path(data)}' AS adp (READ_ONLY)")
        connection.execute("CREATE TABLE marts AS SELECT count(*) AS n FROM adp.main.trajectories")
        assert connection.execute("SELECT n FROM marts").fetchall() == [(0,)]
        for sql in (
            f"SELECT * FROM read_text('{tmp_path / 'secret.txt'}')",
            f"COPY marts TO '{tmp_path / 'out.csv'}'",
            f"ATTACH '{tmp_path / 'other.duckdb'}'",
        ):
            with pytest.raises(duckdb.PermissionException):
                connection.execute(sql)
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            connection.execute("SET enable_external_access = true")


# --- the catalog rebuilds what is not its own ------------------------------------------------


def test_a_tampered_catalog_is_rebuilt_and_an_untouched_one_is_left_alone(data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    path = ensure_catalog(copy)  # the copy's views name the old lake: rebuilt for the new one
    untouched = os.stat(path)
    for _ in range(2):
        with open_catalog(copy) as connection:
            assert connection.execute("SELECT count(*) FROM trajectories").fetchone() == (3,)
    assert os.stat(path).st_ino == untouched.st_ino and os.stat(path).st_mtime_ns == untouched.st_mtime_ns

    # What a READ_WRITE attach from another data dir did, and more: a view replaced, a macro
    # that shadows a function, a table beside the views.
    with duckdb.connect(str(path)) as tamper:
        tamper.execute(
            f"CREATE OR REPLACE VIEW trajectories AS SELECT '{FORGED}' AS task_id, true AS success, true AS verified"
        )
        tamper.execute("CREATE MACRO lower(x) AS 'tampered'")
        tamper.execute("CREATE TABLE planted AS SELECT 1 AS x")
    result = query(copy, "SELECT task_id, lower('A') AS a FROM trajectories ORDER BY task_id")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"task_id": t, "a": "a"} for t in ("cube", "square", "wrong")]
    with open_catalog(copy) as connection:
        assert connection.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'adp'").fetchone() == (0,)
    out = tmp_path / "train.jsonl"
    assert cli("export", "--out", str(out), "--data-dir", str(copy)).exit_code == 0
    assert exported_ids(out) == {"square", "cube"}


# --- export --out never lands on adp's own files ---------------------------------------------


def test_export_refuses_an_existing_file_unless_forced(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    out.write_text("keep me\n")
    refused(cli("export", "--out", str(out), "--data-dir", str(data)), "already exists", "--force")
    assert out.read_text() == "keep me\n"
    forced = cli("export", "--out", str(out), "--force", "--data-dir", str(data))
    assert forced.exit_code == 0, forced.stderr
    assert exported_ids(out) == {"square", "cube"}


def test_export_refuses_the_lake_and_the_catalog_files_even_forced(data: Path, tmp_path: Path) -> None:
    partition = next((data / "lake" / "trajectories").glob("batch=batch-*/data.parquet"))
    (tmp_path / "link.parquet").symlink_to(partition)
    (tmp_path / "lake-link").symlink_to(data / "lake")
    before = files_under(data)
    targets = {
        partition: "is in the lake",
        data / "lake" / "trajectories" / "batch=new" / "data.parquet": "is in the lake",
        data / "lake" / "new.parquet": "is in the lake",
        data / "lake" / ".." / "lake" / "tasks" / "x.jsonl": "is in the lake",
        tmp_path / "link.parquet": "is in the lake",
        tmp_path / "lake-link" / "x.jsonl": "is in the lake",
        data / "adp.duckdb": "catalog file",
        data / "quality.duckdb": "catalog file",
        data / "adp.duckdb.wal": "catalog file",
    }
    for target, reason in targets.items():
        for force in ([], ["--force"]):
            refused(cli("export", "--out", str(target), *force, "--data-dir", str(data)), reason)
    assert files_under(data) == before
    assert not (data / "lake" / "trajectories" / "batch=new").exists()


# --- and every documented view and mart still answers ----------------------------------------


def test_adp_query_answers_every_documented_view_and_mart(data: Path) -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    views = re.findall(r"^\| `(\w+)` \|", operations, flags=re.MULTILINE)
    assert set(views) == set(TABLES) | set(DERIVED_VIEWS)
    marts = sorted(path.stem for path in (REPO / "dbt_quality" / "models" / "marts").glob("*.sql"))
    pipeline = (REPO / "docs" / "pipeline.md").read_text()
    assert marts and all(f"`{mart}`" in pipeline for mart in marts)
    for name in [*views, *marts]:
        result = query(data, f"SELECT count(*) AS n FROM {name}")
        assert result.exit_code == 0, (name, result.stderr)
        assert json.loads(result.stdout)[0]["n"] >= 0
    verified = query(data, "SELECT task_type, verified_successes FROM success_by_type")
    assert json.loads(verified.stdout) == [{"task_type": "code", "verified_successes": 2}]
    joined = query(data, "SELECT count(*) AS n FROM success_by_day d JOIN trajectories t USING (task_type)")
    assert joined.exit_code == 0 and json.loads(joined.stdout)[0]["n"] > 0
    for introspection in ("DESCRIBE trajectories", "SHOW TABLES", "SUMMARIZE tasks"):
        assert query(data, introspection).exit_code == 0


# --- text nested past what a parser takes is refused, not a crash ----------------------------


def nested(depth: int) -> dict[str, str]:
    """Conditions nested ``depth`` levels by brackets, and by operators that need none."""
    return {
        "calls": "abs(" * depth + "n_steps" + ")" * depth + " > 0",
        "parentheses": "(" * depth + "success" + ")" * depth,
        "lists": "[" * depth + "1" + "]" * depth + " IS NOT NULL",
        "subqueries": "EXISTS " + "(SELECT * FROM " * depth + "tasks" + ") t" * depth,
        "no brackets": "NOT " * depth + "success",
    }


@pytest.mark.parametrize("depth", [600, 3000])
def test_a_deeply_nested_query_or_condition_is_refused_with_one_line(data: Path, tmp_path: Path, depth: int) -> None:
    """abs(abs(...)) 500 deep ended in a RecursionError traceback (Python's JSON reader), and
    nested subqueries past some 60,000 levels crash DuckDB's own parser: refused before either."""
    out = tmp_path / "train.jsonl"
    for shape, condition in nested(depth).items():
        result = query(data, f"SELECT count(*) FROM trajectories WHERE {condition}")
        refused(result, "the query")
        assert "deep" in result.stderr or "parse" in result.stderr, (shape, result.stderr)
        refused(cli("export", "--out", str(out), "--where", condition, "--data-dir", str(data)), "--where")
        assert not out.exists()
    # Not a bracket too many: the limit is what adp says it is, and a deep call is still found.
    assert read_statement("SELECT " + "abs(" * MAX_NESTING + "1" + ")" * MAX_NESTING)
    with pytest.raises(RefusedError, match=f"nests brackets {MAX_NESTING + 1} deep"):
        read_statement("SELECT " + "(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1))
    with pytest.raises(RefusedError, match=r"nextval\(\)"):
        read_statement("SELECT " + "abs(" * (MAX_NESTING - 1) + "nextval('s')" + ")" * (MAX_NESTING - 1))


def test_text_duckdb_cannot_take_is_refused_not_a_crash(data: Path, tmp_path: Path) -> None:
    """A byte that is not UTF-8 in the argument (Python hands it on as a lone surrogate) was a
    TypeError traceback from DuckDB's binding; a syntax error is refused like every text adp
    cannot check."""
    out = tmp_path / "train.jsonl"
    refused(query(data, "SELECT '\udcff'"), "not UTF-8")
    refused(cli("export", "--out", str(out), "--where", "task_id = '\udcff'", "--data-dir", str(data)), "not UTF-8")
    refused(query(data, "SELEC task_id FROM tasks"), "not SQL adp can parse", "syntax error")
    assert not out.exists()


# --- a query runs with bounded memory, disk, threads and time --------------------------------


def test_a_query_runs_with_the_configured_limits(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MEMORY_MB": "300", "TEMP_MB": "100", "THREADS": "1"}.items():
        monkeypatch.setenv(f"ADP_QUERY_{name}", value)
    shown = query(
        data,
        "SELECT current_setting('memory_limit') AS memory, current_setting('max_temp_directory_size') AS temp, "
        "current_setting('threads') AS threads",
    )
    assert shown.exit_code == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["memory"], row["temp"], row["threads"]) == ("286.1 MiB", "95.3 MiB", 1)  # 300 MB, 100 MB
    refused(query(data, "SET memory_limit = '100GB'"), "SET statement")


def test_a_query_past_its_time_is_interrupted_naming_the_setting(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADP_QUERY_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("ADP_QUERY_THREADS", "1")
    started = time.monotonic()
    result = query(data, "SELECT sum(hash(x)) FROM range(100000000000) t(x)")  # minutes on any machine
    elapsed = time.monotonic() - started
    assert result.exit_code == 1 and result.stdout == "", (result.exit_code, result.stderr)
    assert result.stderr.splitlines() == [
        "adp: error: the query ran longer than 1 s and was stopped (ADP_QUERY_TIMEOUT_SECONDS)"
    ]
    assert elapsed < 30, elapsed
    # The same connection settings, a query within its time: not interrupted.
    assert json.loads(query(data, "SELECT count(*) AS n FROM trajectories").stdout) == [{"n": 3}]


def test_a_query_or_export_needing_more_memory_than_it_may_use_fails_clearly(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"MEMORY_MB": "64", "TEMP_MB": "0", "THREADS": "1"}.items():
        monkeypatch.setenv(f"ADP_QUERY_{name}", value)
    before = files_under(data)
    result = query(data, "SELECT count(*) FROM (SELECT * FROM range(30000000) t(x) ORDER BY hash(x))")
    assert result.exit_code == 1 and result.stdout == "", (result.exit_code, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith("adp: error: the query needs more than the 64 MB of memory (ADP_QUERY_MEMORY_MB)")
    assert "0 MB of spill space (ADP_QUERY_TEMP_MB)" in line and "Out of Memory" in line

    out = tmp_path / "train.jsonl"
    where = "(SELECT count(DISTINCT hash(x)) FROM range(30000000) t(x)) > 0"
    exported = cli("export", "--out", str(out), "--where", where, "--data-dir", str(data))
    assert exported.exit_code == 1, (exported.exit_code, exported.stderr)
    assert exported.stderr.splitlines()[-1].startswith(
        "adp: error: the export needs more than the 64 MB of memory (ADP_QUERY_MEMORY_MB) and 0 MB of spill space"
    )
    assert not out.exists() and not list(tmp_path.glob(".train.jsonl.*"))
    assert files_under(data) == before


# --- the text DuckDB runs for a condition is the expression adp checked ----------------------


def tree(sql: str) -> dict[str, object]:
    with duckdb.connect() as connection:
        (text,) = connection.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone() or ("",)
    return without_locations(json.loads(text))  # type: ignore[no-any-return]


def without_locations(node: object) -> object:
    if isinstance(node, dict):
        return {key: without_locations(value) for key, value in node.items() if not key.startswith("query_location")}
    if isinstance(node, list):
        return [without_locations(item) for item in node]
    return node


ACCEPTED = [
    "task_type = 'code'",
    "task_type = 'code' AND n_steps < 5 -- a comment",
    "/* a comment */ n_steps > 1",
    "success -- a comment with a ) in it",
    "task_id = 'x' -- )\n OR task_id = 'cube'",
    "(task_type = 'code')",
    "task_id IN (SELECT task_id FROM tasks WHERE task_id = 'cube')",
    "EXISTS (SELECT 1 FROM tasks t WHERE t.task_id = trajectories.task_id)",
    "n_steps BETWEEN 1 AND 3",
    "task_id LIKE 'sq%' OR task_id ILIKE 'CU%'",
    "CAST(n_steps AS INTEGER) > 0 AND n_steps::BIGINT > 0",
    "CASE WHEN success THEN true ELSE false END",
    "list_contains(['square', 'cube'], task_id)",
    "created_at > TIMESTAMP '2000-01-01' AND created_at < now() + INTERVAL 1 DAY",
    "task_id <> 'it''s' AND task_id <> $$a ) b$$ AND \"task_id\" IS NOT NULL",
    "task_id = ANY(['square']) OR task_id != ALL(SELECT 'x')",
    "task_type COLLATE nocase = 'CODE'",
    "n_steps > (SELECT 1 UNION SELECT 0 ORDER BY 1 LIMIT 1)",
    "task_id IN (WITH t AS (SELECT 'cube' AS x) SELECT x FROM t)",
    "{'a': n_steps}.a = n_steps AND [n_steps][1] = n_steps",
    "  success  \n",
]


def test_the_text_duckdb_runs_for_an_accepted_condition_parses_to_the_same_expression(data: Path) -> None:
    """DuckDB 2.0 pastes str(expression) into the SQL a filter runs: for every accepted
    condition that text is the same one expression, alone in a select list and in place."""
    with Lake(data).connect() as connection:
        trajectories = connection.table("trajectories")
        for where in ACCEPTED:
            expression = read_condition(where)
            (checked,) = tree(f"SELECT {where}")["statements"][0]["node"]["select_list"]  # type: ignore[index]
            (pasted,) = tree(f"SELECT {expression}")["statements"][0]["node"]["select_list"]  # type: ignore[index]
            filtered = tree(f"SELECT * FROM t WHERE ({expression})")["statements"][0]["node"]  # type: ignore[index]
            assert pasted == checked and filtered["where_clause"] == checked, where
            assert trajectories.filter(expression).count("*").fetchall()[0][0] >= 0, where
    ok = cli("export", "--out", str(data.parent / "ok.jsonl"), "--where", ACCEPTED[4], "--data-dir", str(data))
    assert ok.exit_code == 0, ok.stderr
    assert exported_ids(data.parent / "ok.jsonl") == {"cube"}


@pytest.mark.parametrize(
    "where",
    [
        "true WINDOW w AS ()",
        "true WINDOW w AS (ORDER BY created_at) -- a comment",
        "sum(n_steps) OVER w > 0 WINDOW w AS ()",
        "true WINDOW w AS (), v AS ()",
        "success AS verified",
        "success verified",
        "ALL success",
        "task_id = $1",
        "task_id = ?",
        "task_id = $name",
        "success ORDER BY 1",
        "success QUALIFY true",
        "DISTINCT success",
    ],
)
def test_a_condition_with_more_than_one_bare_expression_is_refused_before_anything_runs(
    data: Path, tmp_path: Path, where: str
) -> None:
    """A WINDOW clause passed DuckDB's expression parser and its parse tree keeps no trace of
    it; an alias parsed and vanished from the pasted text. Neither is one bare expression."""
    out = tmp_path / "train.jsonl"
    before = files_under(data)
    result = cli("export", "--out", str(out), "--where", where, "--data-dir", str(data))
    refused(result, "--where must be one SQL expression")
    assert "LINE" not in result.stderr and "WHERE (" not in result.stderr  # no SQL of DuckDB's quoted
    assert not out.exists() and files_under(data) == before


# --- quality.duckdb holds dbt's tables and views, nothing else -------------------------------


@pytest.mark.parametrize(
    ("plant", "named"),
    [
        ("CREATE MACRO lower(x) AS 'tampered'", "function main.lower"),
        ("CREATE MACRO success_by_type() AS TABLE SELECT 1 AS forged", "function main.success_by_type"),
        ("CREATE SEQUENCE s", "sequence main.s"),
        ("CREATE TYPE mood AS ENUM ('a')", "type main.mood"),
        ("CREATE SCHEMA other; CREATE TABLE other.t AS SELECT 1 AS x", "schema other"),
    ],
)
def test_a_quality_database_holding_more_than_dbts_tables_and_views_is_refused(
    data: Path, tmp_path: Path, plant: str, named: str
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    with duckdb.connect(str(quality_path(copy))) as tamper:
        tamper.execute(plant)
    result = query(copy, "SELECT lower('A') AS a, count(*) AS n FROM success_by_type")
    assert result.exit_code == 1 and result.stdout == "", (result.exit_code, result.stderr)
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"adp: error: {quality_path(copy)} holds what dbt does not write (") and named in line
    assert "Delete it and run `adp nightly`" in line
    # Runs keep working: the catalog itself never needs dbt's database.
    ensure_catalog(copy)
    quality_path(copy).unlink()
    assert json.loads(query(copy, "SELECT lower('A') AS a").stdout) == [{"a": "a"}]
