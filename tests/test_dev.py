"""`adp dev` end to end: the real webserver and daemon; a file dropped in the data dir's inbox (the
default TASKS_DIR) gets ingested and run."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[int, Path, Path, subprocess.Popen[bytes]]]:
    # The operator's path: `adp dev --data-dir DIR` with no TASKS_DIR watches DIR/inbox.
    port, data = free_port(), tmp_path / "data"
    inbox = data / "inbox"
    env = clean_env(ADP_POLICY="oracle", ADP_TASKS_SETTLE_SECONDS="0", ADP_SENSOR_INTERVAL_SECONDS="1")
    log = (tmp_path / "dev.log").open("wb")
    process = subprocess.Popen(
        [ADP, "dev", "--port", str(port), "--data-dir", str(data)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield port, inbox, data, process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def test_dev_serves_the_ui_on_localhost_and_the_sensor_ingests_a_dropped_file(
    dev_server: tuple[int, Path, Path, subprocess.Popen[bytes]],
) -> None:
    port, inbox, data, process = dev_server
    wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/server_info"), 120, "the webserver", process)
    assert listening_addresses(port) == {"127.0.0.1"}

    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / ".dropped.jsonl").write_text(task_line("from_sensor_1") + "\n" + task_line("from_sensor_2") + "\n")
    (inbox / ".dropped.jsonl").rename(inbox / "dropped.jsonl")

    def ingested() -> bool:
        with Lake(data).connect() as connection:
            return connection.execute("SELECT count(*) FROM trajectories").fetchone() == (2,)

    wait_for(ingested, 240, "the sensor's run to write the batch", process)
    assert (data / "dagster" / "dagster.yaml").exists()
