"""The web and reasoning runtimes against the real Chromium: MiniWoB, the local site, crashes,
the allowlist, memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from runtimes.llm import LLMClient
from runtimes.llm_config import LLMEndpoint
from runtimes.mock_llm import MockLLMServer, MockScript
from runtimes.policies import LLMPolicy, OraclePolicy, Policy, Turn
from runtimes.protocol import ErrorType, TaskSpec, Trajectory
from runtimes.runner import run_tasks
from runtimes.sandbox import WarmSandbox
from runtimes.web.pool import BrowserPool
from tests.conftest import REPO

MINIWOB = [
    TaskSpec.model_validate_json(line) for line in (REPO / "examples" / "miniwob.jsonl").read_text().splitlines()
]
EXAMPLES = {
    task.task_id: task
    for task in (
        TaskSpec.model_validate_json(line) for line in (REPO / "examples" / "tasks.jsonl").read_text().splitlines()
    )
}


def run(
    tasks: Sequence[TaskSpec], policy: Policy | None = None, *, contexts: int = 2, **pool: Any
) -> tuple[list[Trajectory], BrowserPool]:
    async def go() -> tuple[list[Trajectory], BrowserPool]:
        browser = BrowserPool(contexts, **pool)
        sandbox = WarmSandbox(2)
        try:
            trajectories = await run_tasks(tasks, policy or OraclePolicy(), sandbox, max_concurrent=2, browser=browser)
        finally:
            await sandbox.aclose()
            await browser.aclose()
        return trajectories, browser

    return asyncio.run(go())


def with_references(task: TaskSpec, calls: list[dict[str, Any]]) -> TaskSpec:
    data = json.loads(task.model_dump_json())
    data["constraints"]["reference_tool_calls"] = calls
    return TaskSpec.model_validate(data, strict=False)


def test_the_oracle_solves_every_miniwob_example_with_full_reward() -> None:
    assert len({task.constraints.miniwob.task for task in MINIWOB if task.constraints.miniwob}) >= 12
    trajectories, _ = run(MINIWOB)
    failed = {t.task_id: t.error_message for t in trajectories if not t.success}
    assert failed == {}
    for trajectory in trajectories:
        assert trajectory.verifier is not None and trajectory.verifier.checks == {"miniwob_reward": True}
        assert trajectory.metadata["utterance"]  # the instruction the page gave


def test_wrong_miniwob_scripts_earn_no_reward_and_fail() -> None:
    by_kind = {task.constraints.miniwob.task: task for task in MINIWOB if task.constraints.miniwob}
    button = by_kind["click-button"]
    right = button.constraints.reference_tool_calls[0].arguments["selector"]
    wrong_button = 'xpath=//div[@id="area"]//button[not(normalize-space()=' + json.dumps(right.split('"')[1]) + ")]"
    done = {"name": "complete_task", "arguments": {"answer": "done"}}
    wrong = [
        with_references(
            button, [{"name": "browser", "arguments": {"action": "click", "selector": wrong_button}}, done]
        ),
        with_references(by_kind["enter-text"], [{"name": "browser", "arguments": {"action": "snapshot"}}, done]),
        with_references(
            by_kind["login-user"],
            [
                {"name": "browser", "arguments": {"action": "fill", "selector": "#username", "text": "nobody"}},
                {"name": "browser", "arguments": {"action": "click", "selector": "#subbtn"}},
                done,
            ],
        ),
    ]
    trajectories, _ = run(wrong)
    for trajectory in trajectories:
        assert not trajectory.success
        assert trajectory.verifier is not None and trajectory.verifier.checks == {"miniwob_reward": False}
        reward = float(trajectory.verifier.details.rsplit("raw reward ", 1)[1])
        assert reward <= 0
    assert "raw reward -1" in trajectories[0].verifier.details  # clicking the wrong button is penalised


def test_a_reasoning_task_driven_by_the_mock_llm_uses_the_browser_and_python_and_is_verified() -> None:
    task = EXAMPLES["reasoning_average_price"]
    with MockLLMServer(MockScript.from_tasks([task])) as server:
        endpoint = LLMEndpoint(provider="mock", base_url=server.base_url, model="mock", api_key="x")
        (trajectory,), _ = run([task], LLMPolicy(LLMClient(endpoint), name="mock"))
        assert server.stats.completions == 3
    assert trajectory.success, trajectory.error_message
    assert trajectory.policy == "mock"
    assert [step.tool for step in trajectory.steps] == ["browser", "python_executor", "complete_task"]
    assert "backpack\t24.99" in trajectory.steps[0].observation
    assert trajectory.steps[1].observation == "7.93\n"
    assert trajectory.verifier is not None and trajectory.verifier.checks == {"expected_answer": True}
    assert [tool["function"]["name"] for tool in trajectory.tools] == ["browser", "python_executor", "complete_task"]


def test_web_verifiers_and_actions_on_the_local_site() -> None:
    trajectories, _ = run([EXAMPLES["web_order_pens"], EXAMPLES["web_follow_link"], EXAMPLES["reasoning_stock_value"]])
    assert [(t.task_id, t.success) for t in trajectories] == [
        ("web_order_pens", True),
        ("web_follow_link", True),
        ("reasoning_stock_value", True),
    ]
    assert trajectories[0].verifier.checks == {"page_contains": True}
    assert trajectories[1].verifier.checks == {"url_contains": True, "page_contains": True}


def test_a_url_outside_the_allowed_list_is_blocked_and_recorded() -> None:
    task = with_references(
        EXAMPLES["web_follow_link"],
        [
            {"name": "browser", "arguments": {"action": "goto", "url": "https://example.com/secrets"}},
            {"name": "browser", "arguments": {"action": "goto", "url": "file:///etc/passwd"}},
            {"name": "browser", "arguments": {"action": "click", "selector": "text=Price list"}},
            {"name": "complete_task", "arguments": {"answer": "done"}},
        ],
    )
    (trajectory,), _ = run([task])
    blocked_steps = trajectory.steps[:2]
    for step in blocked_steps:
        assert not step.success and step.error_type is ErrorType.NETWORK_ERROR
        assert step.observation.startswith("blocked:")
    blocked = trajectory.metadata["blocked_urls"]
    assert {"https://example.com/secrets", "file:///etc/passwd"} <= set(blocked)
    assert "http://tracker.example/pixel.gif" in blocked  # the page's own off-list request
    assert trajectory.success  # the task itself still got done


class KillsTheBrowser(OraclePolicy):
    """The oracle, but the browser is killed just before the victim task's first action."""

    def __init__(self, pool: list[BrowserPool], victim: str) -> None:
        self.pool, self.victim, self.killed = pool, victim, False

    async def next_turn(self, task: TaskSpec, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Turn:
        if task.task_id == self.victim and not self.killed:
            self.killed = True
            self.pool[0].kill_browser()
        return await super().next_turn(task, messages, tools)


def test_killing_the_browser_mid_batch_relaunches_it_and_every_task_keeps_one_trajectory() -> None:
    tasks = MINIWOB[:8]
    holder: list[BrowserPool] = []
    policy = KillsTheBrowser(holder, victim=tasks[3].task_id)

    async def go() -> tuple[list[Trajectory], BrowserPool]:
        browser = BrowserPool(2)
        holder.append(browser)
        sandbox = WarmSandbox(1)
        try:
            return await run_tasks(tasks, policy, sandbox, max_concurrent=2, browser=browser), browser
        finally:
            await sandbox.aclose()
            await browser.aclose()

    trajectories, browser = asyncio.run(go())
    assert policy.killed
    assert [t.task_id for t in trajectories] == [t.task_id for t in tasks]
    assert browser.launches >= 2
    victim = trajectories[3]
    assert victim.attempts == 2 and victim.success  # retried on the relaunched browser
    for trajectory in trajectories:
        assert trajectory.success or trajectory.error_type is ErrorType.BROWSER_ERROR


def test_a_four_context_batch_stays_within_its_memory_and_an_oversized_browser_is_relaunched() -> None:
    trajectories, browser = run(MINIWOB[:12], contexts=4)
    assert all(t.success for t in trajectories)
    # Measured here: an idle browser ~275 MB, each context ~75-100 MB.
    assert 100 < browser.peak_memory_mb < 1200, browser.peak_memory_mb
    _, small = run(MINIWOB[:4], contexts=1, memory_limit_mb=256)
    assert small.launches >= 2  # the idle browser over its limit was replaced between tasks


@pytest.fixture(autouse=True)
def _no_chromium_left() -> Any:
    yield
    assert BrowserPool().browser_pids() == []
