"""The agent loop's limits and records, with the oracle and with the mock over the real SDK."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from runtimes.agent import AgentLimits, run_task
from runtimes.core import ActionType, ErrorType, TaskSpec, Trajectory
from runtimes.llm import LLMClient, LLMEndpoint, LLMPolicy, OraclePolicy, Policy, UnconfiguredPolicy
from runtimes.sandbox import BwrapSandbox
from runtimes.testing import MockLLMServer, MockScript, ScriptedCall, ScriptedTurn, ScriptRule
from tests.helpers import code_task, sandbox_processes, task_line


def task(line: str) -> TaskSpec:
    return TaskSpec.model_validate_json(line)


def run(spec: TaskSpec, policy: Policy | None = None, limits: AgentLimits | None = None) -> Trajectory:
    async def go() -> Trajectory:
        return await run_task(spec, policy or OraclePolicy(), BwrapSandbox(2), limits)

    return asyncio.run(go())


def calls(*pairs: tuple[str, dict[str, object]]) -> list[dict[str, object]]:
    return [{"name": name, "arguments": arguments} for name, arguments in pairs]


@pytest.fixture
def mock_server() -> Iterator[MockLLMServer]:
    with MockLLMServer(MockScript()) as server:
        yield server


def mock_policy(server: MockLLMServer, *, native_tools: bool = True) -> LLMPolicy:
    endpoint = LLMEndpoint(provider="mock", base_url=server.base_url, model="mock", api_key="x")
    return LLMPolicy(LLMClient(endpoint, backoff_base=0.001), name="mock", native_tools=native_tools)


def test_a_verified_run_records_steps_messages_and_tools() -> None:
    trajectory = run(task(code_task("sum", "print(sum(range(10)))", "45")))
    assert trajectory.success and trajectory.error_type is None
    assert trajectory.final_result == "45"
    assert [(s.tool, s.action_type, s.observation, s.success) for s in trajectory.steps] == [
        ("python_executor", ActionType.CODE_EXECUTION, "45\n", True),
        ("complete_task", ActionType.TOOL_CALL, "task completed", True),
    ]
    assert [m["role"] for m in trajectory.messages] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert trajectory.messages[3] == {"role": "tool", "tool_call_id": "call_0", "content": "45\n"}
    assert [t["function"]["name"] for t in trajectory.tools] == ["python_executor", "complete_task"]
    assert trajectory.verifier is not None and trajectory.verifier.checks == {"expected_answer": True}
    assert trajectory.policy == "oracle" and trajectory.schema_version == 1


def test_a_wrong_answer_fails_verification_with_the_difference_named() -> None:
    line = task_line(
        "sum",
        constraints={
            "reference_tool_calls": calls(
                ("python_executor", {"code": "print(sum(range(10)))"}), ("complete_task", {"answer": "44"})
            ),
            "verify": {"expected_answer": "45"},
        },
    )
    trajectory = run(task(line))
    assert not trajectory.success
    assert trajectory.error_type is ErrorType.RUNTIME_ERROR
    assert trajectory.error_message == "verification failed: expected answer '45', got '44'"
    assert trajectory.verifier is not None and trajectory.verifier.checks == {"expected_answer": False}


def test_python_tests_run_against_the_last_successful_code() -> None:
    code = "def double(x):\n    return 2 * x\n"
    good = run(task(code_task("dbl", code, "ok", tests="assert double(4) == 8")))
    assert good.success and good.verifier and good.verifier.checks["python_tests"]
    bad = run(task(code_task("dbl", code, "ok", tests="assert double(4) == 9")))
    assert not bad.success and "AssertionError" in (bad.error_message or "")


def test_the_step_budget_stops_a_run_that_never_completes() -> None:
    line = task_line(
        "loop",
        max_steps=2,
        constraints={"reference_tool_calls": calls(*[("python_executor", {"code": "print(1)"})] * 5)},
    )
    trajectory = run(task(line))
    assert not trajectory.success
    assert trajectory.error_type is ErrorType.LLM_ERROR
    assert "max_steps=2" in (trajectory.error_message or "")
    assert len(trajectory.steps) == 2


def test_the_task_timeout_ends_the_run_and_its_sandbox() -> None:
    line = task_line(
        "slow",
        timeout=1,
        constraints={
            "reference_tool_calls": calls(("python_executor", {"code": "import time\ntime.sleep(30)"})),
            "sandbox": {"timeout": 60},
        },
    )
    trajectory = run(task(line))
    assert trajectory.error_type is ErrorType.TIMEOUT and not trajectory.success
    assert trajectory.total_duration < 10
    assert sandbox_processes() == []
    # The execution the timeout interrupted is still a recorded step.
    (step,) = trajectory.steps
    assert (step.tool, step.success, step.error_type) == ("python_executor", False, ErrorType.TIMEOUT)
    assert step.action_params == {"code": "import time\ntime.sleep(30)"} and step.duration >= 0.9


def test_a_cut_output_records_its_real_size() -> None:
    line = code_task("loud", "print('x' * 200_000)", "done")
    trajectory = run(task(line))
    observation = trajectory.steps[0].observation
    assert "[stdout was 200001 bytes; the sandbox kept the first 65536]" in observation
    assert len(observation) < 10_000


def test_invalid_tool_arguments_are_a_recorded_failed_step_and_the_run_goes_on() -> None:
    line = task_line(
        "bad_args",
        constraints={
            "reference_tool_calls": calls(
                ("python_executor", {"source": "print(1)"}),
                ("complete_task", {"answer": "done"}),
            )
        },
    )
    trajectory = run(task(line))
    assert trajectory.success
    first = trajectory.steps[0]
    assert (first.success, first.error_type) == (False, ErrorType.LLM_ERROR)
    assert "code" in first.observation and "Field required" in first.observation


def test_a_call_of_a_tool_that_does_not_exist_is_recorded_as_unknown_with_its_name(
    mock_server: MockLLMServer,
) -> None:
    spec = task(code_task("made_up_tool", "print(1)", "1"))
    mock_server.script = MockScript(
        rules=[
            ScriptRule(
                match=spec.description,
                turns=[
                    ScriptedTurn(tool_calls=[ScriptedCall(name="web_lookup", arguments={"q": "x"})]),
                    ScriptedTurn(tool_calls=[ScriptedCall(name="complete_task", arguments={"answer": "1"})]),
                ],
            )
        ]
    )
    trajectory = run(spec, mock_policy(mock_server))
    first = trajectory.steps[0]
    assert (first.tool, first.success, first.error_type) == ("unknown", False, ErrorType.LLM_ERROR)
    assert first.action_params == {"name": "web_lookup", "raw_arguments": '{"q": "x"}'}
    assert "unknown tool 'web_lookup'" in first.observation
    assert trajectory.steps[1].tool == "complete_task"


def test_without_a_configured_llm_tasks_end_as_llm_error_saying_how_to_set_one() -> None:
    trajectory = run(task(task_line("needs_llm")), UnconfiguredPolicy())
    assert trajectory.error_type is ErrorType.LLM_ERROR
    assert "ADP_LLM_BASE_URL" in (trajectory.error_message or "")


def test_a_task_the_oracle_cannot_replay_is_a_system_error_not_an_llm_error() -> None:
    # No model was asked: the task's data lacks what the oracle replays (OracleError).
    no_reference = run(task(task_line("no_reference")))
    assert no_reference.error_type is ErrorType.SYSTEM_ERROR
    assert "reference_tool_calls" in (no_reference.error_message or "")
    unfinished = task(code_task("unfinished", "print(1)", "1"))
    calls = unfinished.constraints.reference_tool_calls or []
    cut = unfinished.model_copy(
        update={"constraints": unfinished.constraints.model_copy(update={"reference_tool_calls": calls[:1]})}
    )
    replayed = run(cut)
    assert replayed.error_type is ErrorType.SYSTEM_ERROR
    assert "without complete_task" in (replayed.error_message or "")
    assert replayed.llm_calls == []


def test_the_mock_drives_the_loop_over_http_with_native_tool_calls(mock_server: MockLLMServer) -> None:
    spec = task(code_task("mocked", "print(6 * 7)", "42"))
    mock_server.script = MockScript.from_tasks([spec])
    trajectory = run(spec, mock_policy(mock_server))
    assert trajectory.success, trajectory.error_message
    assert (trajectory.policy, trajectory.model, trajectory.provider) == ("mock", "mock", "mock")
    assert mock_server.stats.completions == 2
    assert trajectory.usage.total_tokens > 0
    (first_call, _) = trajectory.llm_calls
    assert (first_call.requests, first_call.retries, first_call.cached) == (1, 0, False)
    assert first_call.request and first_call.request["tools"][0]["function"]["name"] == "python_executor"
    assert first_call.response
    assert first_call.response["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "python_executor"


def test_models_without_tool_calling_use_the_json_protocol(mock_server: MockLLMServer) -> None:
    spec = task(code_task("json_mode", "print(6 * 7)", "42"))
    mock_server.script = MockScript.from_tasks([spec])
    trajectory = run(spec, mock_policy(mock_server, native_tools=False))
    assert trajectory.success, trajectory.error_message
    assert "JSON object" in trajectory.messages[0]["content"]
    assert json.loads(trajectory.messages[2]["content"])["tool"] == "python_executor"
    assert trajectory.messages[3]["role"] == "user" and trajectory.messages[3]["content"].startswith("Observation:")
    assert "tools" not in (trajectory.llm_calls[0].request or {})


def test_the_token_budget_stops_a_run(mock_server: MockLLMServer) -> None:
    spec = task(code_task("costly", "print(1)", "1"))
    mock_server.script = MockScript(
        rules=[ScriptRule(match=spec.description, turns=[ScriptedTurn(content="thinking...")] * 10)]
    )
    trajectory = run(spec, mock_policy(mock_server), AgentLimits(token_budget=50))
    assert trajectory.error_type is ErrorType.LLM_ERROR
    assert "token budget of 50 exceeded" in (trajectory.error_message or "")


def test_a_text_answer_gets_a_nudge_and_the_run_continues(mock_server: MockLLMServer) -> None:
    spec = task(code_task("nudge", "print(1)", "1"))
    turns = [
        ScriptedTurn(content="Let me think."),
        ScriptedTurn(tool_calls=[ScriptedCall(name="python_executor", arguments={"code": "print(1)"})]),
        ScriptedTurn(tool_calls=[ScriptedCall(name="complete_task", arguments={"answer": "1"})]),
    ]
    mock_server.script = MockScript(rules=[ScriptRule(match=spec.description, turns=turns)])
    trajectory = run(spec, mock_policy(mock_server))
    assert trajectory.success
    assert trajectory.messages[3]["role"] == "user" and "Call one of the tools" in trajectory.messages[3]["content"]
