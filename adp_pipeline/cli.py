"""The ``adp`` command: run task files, query the results, open the UI, check the machine."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import json
import os
import re
import sqlite3
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import duckdb
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from adp_pipeline.export.formats import FORMATS as EXPORT_FORMATS
from adp_pipeline.export.formats import REGISTRY as EXPORT_REGISTRY
from runtimes.core import AdpError, TaskType, redact
from runtimes.llm import POLICY_NAMES
from runtimes.settings import Settings

_REJECTS_SHOWN = 10
_err = Console(stderr=True)


def _out() -> Console:
    # Tables piped to a file or another program should not be wrapped at 80 columns.
    return Console(width=None if sys.stdout.isatty() else 160)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"adp: error: {printable(redact(message))}", err=True)
    raise SystemExit(code)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``): data from tasks and sandboxed
    code never moves the cursor, sets a window title or hides what follows. Newlines and tabs stay."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _cell(value: object) -> Text:
    """A table cell that shows ``value`` as it is, but for its secrets (redacted): never read as
    rich markup, controls escaped. (``adp query --format csv|json`` give stored values exactly.)"""
    return Text(printable(redact(str(value))))


def _require_writable(data_dir: Path) -> None:
    from adp_pipeline.storage import unwritable_reason

    if (reason := unwritable_reason(data_dir)) is not None:
        _fail(f"data dir {data_dir} cannot be written: {reason} (set ADP_DATA_DIR or --data-dir)")


def _require_data(data_dir: Path, alternative: str) -> None:
    """Refuse (exit 2) a data dir where nothing has run: a reader would create an empty lake and
    catalog there and answer from them, so a mistyped --data-dir would look like an empty lake."""
    from adp_pipeline.storage import lake_exists

    if not lake_exists(data_dir):
        _fail(f"{data_dir.absolute()}: no data here yet: run adp run or make demo ({alternative})", 2)


def _storage_failure(exc: BaseException) -> str | None:
    """The first line of the storage error behind ``exc`` (a read-only or full data dir, seen by
    the lake, the catalog or Dagster's SQLite, under whatever wrapping), or None if it is none."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError | sqlite3.Error | duckdb.IOException):
            lines = str(seen).strip().splitlines()
            return lines[0] if lines else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def _settings(data_dir: Path | None) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}", 2)
    return settings if data_dir is None else settings.model_copy(update={"data_dir": data_dir})


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the lake and catalog live [env ADP_DATA_DIR; default ./data].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """adp: turn task files into verified agent trajectories (a Dagster asset pipeline)."""


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@_data_dir_option
@click.option(
    "--policy",
    type=click.Choice(POLICY_NAMES),
    default=None,
    help="oracle: replay reference calls; mock: scripted OpenAI server; llm: a model [env ADP_POLICY; default llm].",
)
@click.option(
    "--mode",
    type=click.Choice(["local", "redis"]),
    default=None,
    help="local: run here; redis: enqueue for `adp worker` processes on REDIS_URL [env ADP_MODE; default local].",
)
@click.option("--fresh", is_flag=True, help="Start a file's run over instead of resuming one that crashed.")
def run(files: tuple[Path, ...], data_dir: Path | None, policy: str | None, mode: str | None, fresh: bool) -> None:
    """Materialise every asset for FILES (JSONL task files) in this process.

    With no FILES, runs TASK_FILE. A file whose earlier run crashed (same policy, model and
    token budget) resumes it: only the tasks without a committed trajectory run. Prints a
    summary per file; exits non-zero when a run failed.
    """
    from adp_pipeline.materialize import run_task_files  # imports dagster: keep `adp --help` fast

    settings = _settings(data_dir)
    if policy is not None:
        settings = settings.model_copy(update={"policy": policy})
    if mode is not None:
        settings = settings.model_copy(update={"mode": mode})
    paths = list(files) or ([settings.task_file] if settings.task_file else [])
    if not paths:
        _fail("no task file given: pass FILE... or set TASK_FILE", 2)
    for path in paths:
        if not path.is_file():
            _fail(f"{path}: no such task file" if not path.exists() else f"{path}: not a regular file", 2)
    _require_writable(settings.data_dir)

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_err
    )
    failure: str | None = None
    with progress:
        bar = progress.add_task("materialising", total=len(paths))
        try:
            runs = run_task_files(paths, settings, on_file_done=lambda _run: progress.advance(bar), fresh=fresh)
        except AdpError as exc:
            failure = str(exc)
        except Exception as exc:  # the disk filled up, or went read-only, under the run
            if (reason := _storage_failure(exc)) is None:
                raise
            failure = f"data dir {settings.data_dir}: {reason}"
    if failure is not None:  # after the progress bar's last line, so the error is the last one
        _fail(failure)
    for resumed in (run for run in runs if run.resumed):
        click.echo(
            f"{resumed.registered.key}: resumed a crashed run: {resumed.resumed:,} of {resumed.tasks:,} tasks "
            f"done before; ran {resumed.tasks - resumed.resumed:,}"
        )
    succeeded = [run.registered.key for run in runs if run.success]
    if succeeded:
        _print_run_summary(succeeded, settings)
    failed = [run for run in runs if not run.success]
    for run in failed:
        message = f"adp: error: {run.registered.source_path}: {run.failure} (run {run.run_id})"
        click.echo(printable(redact(message)), err=True)
    if failed:
        raise SystemExit(1)


def _print_run_summary(batches: Sequence[str], settings: Settings) -> None:
    from adp_pipeline.storage import Lake, run_report
    from adp_pipeline.synthesize import model_missing

    report = run_report(Lake(settings.data_dir), batches, rejected_lines_shown=_REJECTS_SHOWN)
    out = _out()
    table = Table(title=f"task batches (policy {settings.policy}; verified successes/tasks per type)")
    for column in ("batch", "accepted", "rejected", *TaskType):
        table.add_column(column, justify="left" if column == "batch" else "right")
    for batch in report.batches:
        tallies = (f"{tally.verified}/{tally.trajectories}" for tally in batch.by_type.values())
        table.add_row(*(_cell(value) for value in (batch.batch, batch.accepted, batch.rejected, *tallies)))
    out.print(table)
    if any(made.accepted or made.rejected_by_stage for made in report.synthesis):
        synthesized = Table(title="synthesized tasks (the sensor runs their file; or `adp run` it)")
        for column in ("batch", "accepted", "rejected by stage", "task file"):
            synthesized.add_column(column, overflow="fold")
        for made in report.synthesis:
            by_stage = ", ".join(f"{stage} {n}" for stage, n in made.rejected_by_stage.items())
            synthesized.add_row(
                _cell(made.batch), _cell(made.accepted), _cell(by_stage), _cell(" ".join(made.task_files))
            )
        out.print(synthesized)
    if (missing := model_missing(settings)) is not None:  # the synthesized_tasks metadata's words
        out.print(f"synthesis: {missing}", highlight=False, markup=False)
    if report.failures:
        failures = Table(title="failed tasks by error type")
        for column in ("error type", "tasks", "for example"):
            failures.add_column(column, overflow="fold")
        for group in report.failures:
            failures.add_row(_cell(group.error_type), _cell(group.tasks), _cell((group.example or "")[:200]))
        out.print(failures)
    if report.rejected_lines:
        shown = Table(title=f"rejected lines (first {_REJECTS_SHOWN})")
        for column in ("file:line", "field", "reason"):
            shown.add_column(column, overflow="fold")
        for line in report.rejected_lines:
            shown.add_row(
                _cell(f"{Path(line.source_file).name}:{line.line_number}"), _cell(line.field or ""), _cell(line.reason)
            )
        out.print(shown)
        out.print('all of them: adp query "select * from task_rejects"', highlight=False)


@main.command()
@_data_dir_option
def nightly(data_dir: Path | None) -> None:
    """Run the nightly job now, in this process: dbt build (marts, tests as asset checks) and the
    training-set export into the data dir. Exits non-zero when the run failed."""
    from adp_pipeline.materialize import failure_reason, run_nightly

    settings = _settings(data_dir)
    _require_writable(settings.data_dir)
    with _err.status("nightly: dbt build and the training-set export ..."):
        result = run_nightly(settings)
    checks = result.get_asset_check_evaluations()
    failed = [e for e in checks if not e.passed]
    out = _out()
    out.print(f"nightly run {result.run_id}: {'SUCCESS' if result.success else 'FAILURE'}", highlight=False)
    out.print(f"asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed", highlight=False)
    if failed:
        table = Table(title="failed checks")
        for column in ("asset", "check", "severity"):
            table.add_column(column)
        for evaluation in failed:
            asset = evaluation.asset_key.to_user_string()
            table.add_row(_cell(asset), _cell(evaluation.check_name), _cell(evaluation.severity.value))
        out.print(table)
    for materialization in result.asset_materializations_for_node("training_dataset"):
        metadata = materialization.metadata
        out.print(
            printable(f"training set: {metadata['records'].value} records in {metadata['path'].value}"),
            highlight=False,
        )
    if not result.success:
        _fail(failure_reason(result))


@main.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="FILE.parquet or .jsonl.")
@click.option(
    "--format",
    "export_format",
    type=click.Choice(EXPORT_FORMATS),
    default=None,
    help="; ".join(f"{name}: {format_.summary}" for name, format_ in EXPORT_REGISTRY.items())
    + "  [default: ADP_EXPORT_FORMAT, openai]",
)
@click.option("--where", default=None, help="SQL condition on the trajectories view, e.g. \"task_type = 'code'\".")
@click.option("--include-failed", is_flag=True, help="Export every trajectory, not only verified successful ones.")
@click.option(
    "--val-fraction",
    type=float,
    default=None,
    help="Share of task ids (by hash) in split=validation  [default: ADP_EXPORT_VAL_FRACTION, 0.05].",
)
@click.option("--force", is_flag=True, help="Replace FILE if it exists (never a file in the lake or a catalog file).")
@_data_dir_option
def export(
    out: Path,
    export_format: str | None,
    where: str | None,
    include_failed: bool,
    val_fraction: float | None,
    force: bool,
    data_dir: Path | None,
) -> None:
    """Write the training set: one record per task (its latest trajectory), verified ones only.

    Records whose messages are inconsistent (a result with no call, a call with no result,
    arguments that are not JSON) are left out and listed with the reason. --where is one SQL
    expression, read like `adp query` (the lake only; ADP_QUERY_TEMP_MB of spill space,
    ADP_QUERY_THREADS threads, ADP_QUERY_MEMORY_MB of memory up to 256 MB; no time limit); an
    existing FILE is replaced only with --force, and never one in the lake or a catalog file.
    A data dir without a lake is refused (exit 2): nothing has run there.
    """
    from adp_pipeline.export import check_export, export_training_set
    from adp_pipeline.storage import Lake, QueryLimits, RefusedError

    settings = _settings(data_dir)
    lake = Lake(settings.data_dir)
    # The training_dataset asset's default too: both exports of one lake split alike.
    fraction = settings.export_val_fraction if val_fraction is None else val_fraction
    export_format = export_format or settings.export_format
    request: dict[str, Any] = {"export_format": export_format, "where": where, "val_fraction": fraction}
    try:  # refused before anything is read or written
        check_export(lake, out, **request, overwrite=force)
    except RefusedError as exc:
        _fail(str(exc), 2)
    except AdpError as exc:
        _fail(str(exc))
    _require_data(settings.data_dir, "there is nothing to export")  # reading would lay out an empty lake
    # The count shows from the first batch written: a --where DuckDB cannot run (a missing column, a
    # failed cast) fails when the selection starts, and must not leave "exporting 0 trajectories" above it.
    selecting = _err.status("exporting: selecting the trajectories ...")  # transient: leaves no line
    progress = Progress(TextColumn("{task.description}"), TextColumn("{task.completed} trajectories"), console=_err)
    bar = progress.add_task("exporting", total=None)

    def exported(done: int) -> None:
        progress.update(bar, completed=done)
        if not progress.live.is_started:
            selecting.stop()
            progress.start()

    failure: str | None = None
    code = 0
    try:
        selecting.start()
        summary = export_training_set(
            lake,
            out,
            **request,
            include_failed=include_failed,
            on_progress=exported,
            overwrite=force,
            limits=QueryLimits.from_settings(settings),
        )
    except RefusedError as exc:
        failure, code = str(exc), 2
    except AdpError as exc:
        failure, code = str(exc), 1
    except OSError as exc:
        failure, code = f"{out}: {exc.strerror or exc}", 1
    finally:
        selecting.stop()
        if progress.live.is_started:  # a progress never started still prints a blank line at its stop
            progress.stop()
    if failure is not None:  # after the progress's last line, so the error is the last one
        _fail(failure, code)
    splits = ", ".join(f"{split} {n}" for split, n in sorted(summary.by_split.items())) or "none"
    click.echo(printable(f"wrote {out}: {summary.rows} records ({export_format}; {splits})"))
    if summary.sidecar is not None:
        click.echo(printable(f"wrote {summary.sidecar}: adp's metadata of each record, in the same order"))
    if summary.excluded:
        click.echo(f"left out {len(summary.excluded)} trajectories with inconsistent messages:", err=True)
        for task_id, reason in summary.excluded[:_REJECTS_SHOWN]:
            click.echo(printable(redact(f"  {task_id}: {reason}")), err=True)
        if len(summary.excluded) > _REJECTS_SHOWN:
            click.echo(f"  …and {len(summary.excluded) - _REJECTS_SHOWN} more", err=True)


@main.command()
@click.argument("sql")
@_data_dir_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--create", is_flag=True, help="Create an empty lake and catalog if the data dir has none.")
def query(sql: str, data_dir: Path | None, fmt: str, create: bool) -> None:
    """Run one read statement (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE) over the
    DuckDB views (tasks, task_rejects, ...) and the dbt marts.

    The connection reaches the lake and nothing else; any other statement (COPY, ATTACH, SET,
    ...), a second statement, or a call that is not a read is refused (exit 2). It may use
    ADP_QUERY_MEMORY_MB of memory, ADP_QUERY_TEMP_MB of spill space and ADP_QUERY_THREADS
    threads, and is stopped after ADP_QUERY_TIMEOUT_SECONDS. Safe while runs are writing: the
    catalog is attached read-only and runs never lock it. A data dir without a lake (nothing has
    run there, or a mistyped --data-dir) is refused (exit 2) unless --create.
    """
    from adp_pipeline.storage import (
        QueryLimits,
        RefusedError,
        open_catalog,
        outside_the_lake_refused,
        read_statement,
        within_limits,
    )
    from runtimes.core import CatalogError, QueryLimitError

    settings = _settings(data_dir)
    limits = QueryLimits.from_settings(settings)
    try:
        statement = read_statement(sql)  # before the catalog is even opened
        if not create:
            _require_data(settings.data_dir, "or pass --create to query an empty lake there")
        with (
            open_catalog(settings.data_dir, limits) as connection,
            outside_the_lake_refused("the query"),
            within_limits(connection, limits),
        ):
            cursor = connection.execute(statement)
            columns = [column[0] for column in cursor.description or []]
            rows = cursor.fetchall()
    except RefusedError as exc:
        _fail(str(exc), 2)
    except (CatalogError, QueryLimitError) as exc:
        _fail(str(exc))
    except OSError as exc:  # a data dir that cannot hold the catalog
        _fail(f"data dir {settings.data_dir}: {exc.strerror or exc}")
    except duckdb.Error as exc:
        _fail(f"query failed: {str(exc).strip().splitlines()[0]}")
    _print_rows(columns, rows, fmt)


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_cell(value) for value in row] for row in rows])
    elif fmt == "json":
        records = [dict(zip(columns, (_plain(value) for value in row), strict=True)) for row in rows]
        # JSON escapes C0 controls itself; C1 (a terminal reads \x9b as CSI) is escaped here, still valid JSON.
        text = json.dumps(records, ensure_ascii=False, indent=2, default=str)  # default: BLOB, and types to come
        click.echo(re.sub(r"[\x7f-\x9f]", lambda match: f"\\u{ord(match.group()):04x}", text))
    else:
        table = Table()
        for column in columns:
            table.add_column(_cell(column))
        for row in rows:
            table.add_row(*(_cell(_plain(value)) for value in row))
        _out().print(table)
        _err.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}")


def _csv_cell(value: Any) -> Any:
    plain = _plain(value)
    if isinstance(plain, list | dict):
        plain = json.dumps(plain, ensure_ascii=False)
    return printable(plain) if isinstance(plain, str) else plain


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):  # DuckDB's DECIMAL (averages, sums of decimals)
        return float(value)
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@main.command()
@_data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; keep it local unless you must.")
@click.option("--port", default=3000, show_default=True, type=int)
@click.option(
    "--view-port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="adp view alongside, on the same host (0: no viewer).",
)
def dev(data_dir: Path | None, host: str, port: int, view_port: int) -> None:
    """The Dagster UI (webserver + daemon) with adp's definitions, and `adp view` beside it; the
    sensor watches TASKS_DIR. Both are children of this process and end with it."""
    from adp_pipeline.instance import prepare_dagster_home
    from adp_pipeline.storage import Lake

    settings = _settings(data_dir)
    if view_port and view_port == port:
        _fail(f"--view-port {view_port} is the UI's --port: give the viewer another one (0: none)", 2)
    if (problem := settings.policy_config.problem(settings.policy)) is not None:
        # The sensor's runs would each fail at their first step with this same reason: say it now.
        click.echo(f"adp: warning: {printable(redact(problem))}", err=True)
    inbox = settings.tasks_dir.absolute()
    try:
        inbox.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"TASKS_DIR {inbox} cannot be created: {exc}")
    env = {**os.environ, "DAGSTER_HOME": str(prepare_dagster_home(settings))}
    env["ADP_DATA_DIR"] = str(settings.data_dir.absolute())
    env["TASKS_DIR"] = str(inbox)  # the folder said below, whatever directory Dagster's processes start in
    command = [sys.executable, "-m", "dagster", "dev", "-m", "adp_pipeline.definitions", "-h", host, "-p", str(port)]
    lines = [
        f"the sensor watches {inbox} for *.jsonl task files (policy {settings.policy})",
        f"Dagster UI on http://{_url_host(host)}:{port} (DAGSTER_HOME={env['DAGSTER_HOME']}); Ctrl-C stops it",
    ]
    viewer_command: list[str] | None = None
    if view_port:
        try:  # the viewer refuses a data dir without a lake; the runs of this instance lay it out anyway
            Lake(settings.data_dir).ensure_layout()
        except OSError as exc:
            _fail(f"data dir {settings.data_dir.absolute()} cannot be written: {exc}")
        viewer_url = f"http://{_url_host(_reachable(host))}:{view_port}"
        if settings.view_url is None:  # so that Dagster's metadata links to this viewer
            env["ADP_VIEW_URL"] = viewer_url
        viewer_command = [
            sys.executable,
            "-c",
            "from adp_pipeline.cli import main; main()",
            "view",
            "--data-dir",
            str(settings.data_dir.absolute()),
            "--host",
            host,
            "--port",
            str(view_port),
        ]
        lines.append(f"adp view on {viewer_url}")
    for line in lines:  # whole lines (a console would wrap a long path at 80 columns in a log)
        click.echo(printable(line), err=True)
    raise SystemExit(_supervise(command, viewer_command, env))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reachable(host: str) -> str:
    """Where a browser on this machine reaches a server bound to ``host`` (not 0.0.0.0 or ::)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _supervise(dagster: list[str], viewer: list[str] | None, env: dict[str, str]) -> int:
    """Run Dagster (and the viewer) as children and return Dagster's exit code.

    Each child has its own process group, so a Ctrl-C or a SIGTERM to this process's group reaches
    them once, forwarded from here (`dagster dev` cuts its own shutdown short at a second one).
    They get SIGTERM if this process dies without forwarding (Linux's parent-death signal). When
    Dagster ends, the viewer is stopped; when the viewer ends, Dagster goes on, and that is said.
    """
    import signal
    import subprocess

    parent = os.getpid()

    def die_with_parent() -> None:
        if sys.platform == "linux":
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the line above
                os.kill(os.getpid(), signal.SIGTERM)

    children: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    dagster_process = subprocess.Popen(dagster, env=env, process_group=0, preexec_fn=die_with_parent)
    children.append(dagster_process)
    viewer_process = None
    if viewer is not None:
        viewer_process = subprocess.Popen(viewer, env=env, process_group=0, preexec_fn=die_with_parent)
        children.append(viewer_process)
    if stopping:  # a signal came while they were starting: they get it now
        forward(stopping[-1], None)
    reported = False
    while True:
        try:
            code = dagster_process.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if viewer_process is not None and not reported and not stopping and viewer_process.poll() is not None:
            reported = True
            click.echo(
                f"adp: warning: adp view exited with code {viewer_process.returncode}; Dagster goes on", err=True
            )
    if viewer_process is not None and viewer_process.poll() is None:
        viewer_process.terminate()
        try:
            viewer_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            viewer_process.kill()
            viewer_process.wait()
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


@main.command()
@_data_dir_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address; keep it local unless you must.")
@click.option("--port", default=8080, show_default=True, type=int)
def view(data_dir: Path | None, host: str, port: int) -> None:
    """A read-only web app over the lake: batches, trajectories (filtered, paged) and each
    trajectory's steps. It reads like adp query (the lake only, under the same limits); a data
    dir without a lake is refused (exit 2)."""
    from urllib.parse import urlsplit

    import uvicorn

    from adp_pipeline.storage import QueryLimits
    from adp_pipeline.view import build_app
    from adp_pipeline.view.app import LOCAL_HOSTS

    settings = _settings(data_dir)
    _require_data(settings.data_dir, "adp view shows a lake that runs wrote")
    # Bound to loopback, or with ADP_VIEW_URL naming how it is reached (the compose service binds
    # 0.0.0.0 in its container, published on the host's 127.0.0.1), it answers only requests
    # addressed to a local name or that URL's host: no other site's page can reach it through a
    # domain pointed at 127.0.0.1 (DNS rebinding).
    local = host.lower() in LOCAL_HOSTS or host.startswith("127.")
    view_host = urlsplit(settings.view_url).hostname if settings.view_url else None
    hosts = {*LOCAL_HOSTS, host.lower()} | ({view_host.lower()} if view_host else set())
    guarded = local or view_host is not None
    app = build_app(settings.data_dir.absolute(), QueryLimits.from_settings(settings), hosts if guarded else None)
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        printable(f"adp view on http://{shown}:{port} over {settings.data_dir.absolute()}; Ctrl-C stops it"), err=True
    )
    if not guarded:
        click.echo(
            printable(
                f"adp view has no login: whoever reaches port {port} on {host} reads this lake; "
                "keep it on 127.0.0.1 (the default) unless a firewall or an authenticating proxy guards it"
            ),
            err=True,
        )
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)


@main.command()
@_data_dir_option
def doctor(data_dir: Path | None) -> None:
    """Check each system dependency and say how to fix what is missing."""
    from adp_pipeline.doctor import Status, run_checks

    results = run_checks(_settings(data_dir))
    table = Table("check", "status", expand=True)
    # Wrapped, never cut: a long URL or command folds onto the next line in a narrow terminal or a
    # pipe (a minimum width here made rich draw the table wider than the console, which cut the fix).
    # Four parts of the rest to the detail: a model and its endpoint URL fit on one line at 160.
    table.add_column("detail", ratio=4, overflow="fold")
    table.add_column("fix", ratio=1, overflow="fold")
    colour = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
    for result in results:
        status = Text(str(result.status), style=colour[result.status])
        table.add_row(_cell(result.name), status, _cell(result.detail), _cell(result.fix))
    _out().print(table)
    if any(result.status is Status.FAIL for result in results):
        raise SystemExit(1)


@main.command("mock-llm")
@click.option(
    "--tasks",
    "task_files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Script the answers from these task files' reference_tool_calls.",
)
@click.option("--script", type=click.Path(exists=True, path_type=Path), help="A MockScript JSON file.")
@click.option("--latency", default=0.0, show_default=True, help="Seconds before each answer.")
@click.option("--error-rate", default=0.0, show_default=True, help="Fraction of requests answered 429/500.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
def mock_llm(
    task_files: tuple[Path, ...], script: Path | None, latency: float, error_rate: float, host: str, port: int
) -> None:
    """Serve the scripted OpenAI-compatible mock LLM; prints its base URL, then serves until stopped."""
    import signal
    import threading

    from runtimes.core import parse_task_file
    from runtimes.testing import MockLLMServer, MockScript

    rules = MockScript.model_validate_json(script.read_text()).rules if script else []
    for path in task_files:
        rules += MockScript.from_tasks(item.task for item in parse_task_file(path).accepted).rules
    server = MockLLMServer(MockScript(rules=rules), latency=latency, error_rate=error_rate, host=host, port=port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        click.echo(server.base_url)
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


@main.command()
@click.option("--runtime", type=click.Choice([t.value for t in TaskType]), required=True, help="The stream to consume.")
@click.option("--name", default=None, help="Consumer name in the group (default: runtime-host-pid).")
@click.option("--metrics-port", type=int, default=None, help="/metrics and /health [env METRICS_PORT; 0 picks one].")
def worker(runtime: str, name: str | None, metrics_port: int | None) -> None:
    """Consume tasks:<runtime> from REDIS_URL and run them; drains on SIGTERM."""
    import redis

    from runtimes.scale import run_worker

    settings = _settings(None)
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    try:
        run_worker(TaskType(runtime), settings, name)
    except AdpError as exc:
        _fail(f"worker {runtime}: {exc}")
    except redis.ConnectionError as exc:
        _fail(f"worker {runtime}: cannot reach Redis at {settings.redis_url}: {exc}")  # _fail redacts
