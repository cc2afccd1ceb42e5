"""`adp dev` end to end: the real webserver and daemon, and `adp view` beside them; a file dropped
in the data dir's inbox (the default TASKS_DIR) gets ingested and run, its materialisation links to
that viewer, and a SIGTERM to `adp dev` leaves none of its processes behind."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from adp_pipeline.storage import Lake
from tests.helpers import ADP, REPO, clean_env, free_port, http_ok, task_line


def wait_for(condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"adp dev exited with {process.returncode} while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.5)


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc: no iproute2 needed)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                packed = bytes.fromhex(address)
                words = [packed[i : i + 4][::-1] for i in range(0, len(packed), 4)]  # little-endian words
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc: each one's parent)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
    except OSError:
        return f"{pid} (gone)"


@dataclass
class Dev:
    port: int
    view_port: int
    inbox: Path
    data: Path
    process: subprocess.Popen[bytes]
    children: set[int] = field(default_factory=set)


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[Dev]:
    # The operator's path: `adp dev --data-dir DIR` with no TASKS_DIR watches DIR/inbox.
    port, view_port, data = free_port(), free_port(), tmp_path / "data"
    inbox = data / "inbox"
    # Synthesis off: its task files would start more runs, and a run still going when `adp dev` is
    # stopped outlives it by design (Dagster's run workers are detached until their run ends).
    env = clean_env(
        ADP_POLICY="oracle",
        ADP_TASKS_SETTLE_SECONDS="0",
        ADP_SENSOR_INTERVAL_SECONDS="1",
        ADP_SYNTH_MAX_GENERATION="0",
    )
    log = (tmp_path / "dev.log").open("wb")
    process = subprocess.Popen(
        [ADP, "dev", "--port", str(port), "--view-port", str(view_port), "--data-dir", str(data)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dev = Dev(port, view_port, inbox, data, process)
    try:
        yield dev
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        # Its children have process groups of their own: they must end on the forwarded signal.
        commands = {pid: command_line(pid) for pid in dev.children}
        # Within 20 s: before Dagster's code servers would end anyway on a missed heartbeat (30 s).
        deadline = time.monotonic() + 20
        while (left := sorted(pid for pid in dev.children if alive(pid))) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert dev.children, "the test saw adp dev's children"
    assert left == [], f"adp dev left {[commands[pid] for pid in left]} running"


def test_dev_serves_the_ui_and_the_viewer_on_localhost_and_the_sensor_ingests_a_dropped_file(
    dev_server: Dev,
) -> None:
    port, inbox, data, process = dev_server.port, dev_server.inbox, dev_server.data, dev_server.process
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/server_info"), 120, "the webserver", process)
    assert listening_addresses(port) == {"127.0.0.1"}
    wait_for(lambda: http_ok(f"http://127.0.0.1:{dev_server.view_port}/"), 60, "the viewer", process)
    assert listening_addresses(dev_server.view_port) == {"127.0.0.1"}
    # Before any run: dagster dev, its webserver, daemon and code server, and the viewer (the runs
    # the daemon launches later are Dagster's to end).
    dev_server.children = descendants(process.pid)

    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / ".dropped.jsonl").write_text(task_line("from_sensor_1") + "\n" + task_line("from_sensor_2") + "\n")
    (inbox / ".dropped.jsonl").rename(inbox / "dropped.jsonl")

    def ingested() -> bool:
        with Lake(data).connect() as connection:
            return connection.execute("SELECT count(*) FROM trajectories").fetchone() == (2,)

    wait_for(ingested, 240, "the sensor's run to write the batch", process)
    assert (data / "dagster" / "dagster.yaml").exists()

    # ADP_VIEW_URL reached Dagster's processes: the run's metadata links to the viewer beside it.
    def linked() -> str | None:
        with dg.DagsterInstance.from_config(str(data / "dagster")) as instance:
            event = instance.get_latest_materialization_event(dg.AssetKey("trajectories"))
        if event is None or event.asset_materialization is None:
            return None
        link = event.asset_materialization.metadata.get("view_batch")
        return str(link.value) if link is not None else "no link"

    wait_for(lambda: linked() is not None, 60, "the trajectories materialisation", process)
    url = linked()
    assert url is not None and url.startswith(f"http://127.0.0.1:{dev_server.view_port}/trajectories?batch="), url
    assert http_ok(url)

    def runs_done() -> bool:
        with dg.DagsterInstance.from_config(str(data / "dagster")) as instance:
            runs = instance.get_runs()
        return bool(runs) and all(run.is_finished for run in runs)

    wait_for(runs_done, 120, "the run to finish", process)
