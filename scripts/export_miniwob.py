"""Write MiniWoB++ tasks with verified oracle references as an adp task file.

Each seeded episode is opened in the system Chromium, solved from its instruction
(synthesis/miniwob_solvers.py), replayed by the oracle, and kept only with raw reward 1.

Usage: .venv/bin/python scripts/export_miniwob.py > examples/miniwob.jsonl
"""

import asyncio
import sys

from runtimes.agent import run_tasks
from runtimes.core import TaskSpec
from runtimes.llm import OraclePolicy
from runtimes.sandbox import WarmSandbox
from runtimes.web import BrowserPool, BrowserSession
from synthesis.miniwob_solvers import SOLVERS, solve
from synthesis.reseed import episode_task

SEEDS = (7, 11)


def miniwob_task(name: str, seed: int, references: list[dict[str, object]] | None = None) -> TaskSpec:
    return episode_task(f"miniwob_{name.replace('-', '_')}_{seed}", name, seed, list(references or []))


async def main() -> None:
    tasks = []
    async with BrowserPool(2) as pool:
        for name in SOLVERS:
            for seed in SEEDS:
                async with pool.context() as context:
                    session = await BrowserSession.open(context, miniwob_task(name, seed))
                    assert session.utterance is not None
                    tasks.append(miniwob_task(name, seed, solve(name, session.utterance)))
        sandbox = WarmSandbox(1)
        trajectories = await run_tasks(tasks, OraclePolicy(), sandbox, max_concurrent=2, browser=pool)
        await sandbox.aclose()
    for task, trajectory in zip(tasks, trajectories, strict=True):
        if trajectory.success:
            sys.stdout.write(task.model_dump_json(exclude_none=True) + "\n")
        else:
            print(f"dropped {task.task_id}: {trajectory.error_message}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
