from __future__ import annotations

import json
import subprocess
from pathlib import Path

from adp_pipeline.storage import catalog_path, open_catalog
from tests.helpers import ADP, REPO, adp, clean_env, task_line

N_TASKS = 10_000


def test_readers_query_while_a_materialisation_writes_and_never_see_half_a_batch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    big = tmp_path / "big.jsonl"
    big.write_text("".join(task_line(f"t{i}") + "\n" for i in range(N_TASKS)))

    # A reader holds the catalog open for the whole run: a writer that needed the DuckDB lock
    # would fail, so the run succeeding shows that runs never take it.
    with open_catalog(data) as held:
        assert held.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
        writer = subprocess.Popen(
            [ADP, "run", str(big), "--data-dir", str(data)],
            cwd=REPO,
            env=clean_env(ADP_POLICY="oracle"),  # no model here: llm would refuse to start
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        counts_while_writing: list[int] = []
        while writer.poll() is None:
            done = adp("query", "select count(*) as n from tasks", "--data-dir", str(data), "--format", "json")
            assert done.returncode == 0, done.stderr
            if writer.poll() is None:
                counts_while_writing.append(json.loads(done.stdout)[0]["n"])
        _, writer_err = writer.communicate(timeout=300)
        assert writer.returncode == 0, writer_err

        assert counts_while_writing, "no query finished while the run was going"
        # A batch appears whole or not at all: the partition file is renamed into place.
        assert set(counts_while_writing) <= {0, N_TASKS}
        # The reader that held the catalog all along sees the new batch without reopening.
        assert held.execute("SELECT count(*) FROM tasks").fetchone() == (N_TASKS,)
    assert catalog_path(data).exists()
