"""The agent loop, one for every task type: ask the policy, run the tools it calls, record
every step, stop at complete_task, the step budget, the timeout or the token budget, verify."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runtimes.agent._tools import (
    TOOL_ARGS,
    TOOLS_BY_TYPE,
    CompleteTaskArgs,
    PythonExecutorArgs,
    known_tool,
    tools_for,
)
from runtimes.agent._verify import sandbox_failure, verify_task
from runtimes.core import (
    RUNTIME_ID,
    ActionType,
    AdpError,
    BrowserArgs,
    BrowserError,
    ErrorType,
    LLMCall,
    LLMError,
    Step,
    TaskSpec,
    TokenUsage,
    Trajectory,
    VerifierResult,
    parse_browser_action,
    redact,
)
from runtimes.llm import LLMPolicy, Policy, Turn
from runtimes.sandbox import ExecResult, Sandbox, SandboxLimits
from runtimes.web import BrowserPool, BrowserSession, EgressProxy, task_allowlist

OBSERVATION_CHARS = 8000
_MIN_SCREENSHOT_SECONDS = 0.2  # less time than this left for a screenshot: none is taken
_SYSTEM_PROMPT = (
    "You are an agent that completes tasks with tools. Work step by step: call a tool, read its "
    "result, continue. Use python_executor to run Python code and browser to act on web pages "
    "(snapshot shows the page). When you are done, call complete_task with the final answer."
)
_JSON_PROTOCOL = (
    "\nYou cannot call tools natively. Answer every turn with one JSON object and nothing else: "
    '{{"tool": "<name>", "arguments": {{...}}}}. The tools, as JSON schemas:\n{schemas}'
)


@dataclass(frozen=True)
class AgentLimits:
    token_budget: int = 200_000
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


@dataclass
class _Run:
    task: TaskSpec
    steps: list[Step] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    llm_calls: list[LLMCall] = field(default_factory=list)
    answer: str | None = None
    last_good_code: str | None = None
    session: BrowserSession | None = None
    sandbox_failure: str | None = None  # why the sandbox could not run code, the first time it could not
    browser: BrowserPool | None = None  # whose settings say when to take screenshots
    deadline: float | None = None  # the event loop's time at which the task's timeout ends
    asking: bool = False  # waiting for the policy's next turn
    answered: bool = False  # the policy answered a turn of this task (a model live, not from the cache)


async def run_task(
    task: TaskSpec,
    policy: Policy,
    sandbox: Sandbox,
    limits: AgentLimits | None = None,
    browser: BrowserPool | None = None,
) -> Trajectory:
    """Run ``task`` to one trajectory. Never raises for anything the task, model, code or page does."""
    limits = limits or AgentLimits()
    started = time.monotonic()
    if task.task_type not in TOOLS_BY_TYPE:
        return failed_trajectory(
            task, policy, ErrorType.SYSTEM_ERROR, f"no runtime for {task.task_type} tasks in this version of adp"
        )
    tools = tools_for(task.task_type)
    sandbox_limits = _sandbox_limits(task, limits.sandbox)
    run = _Run(task, browser=browser)
    system = _SYSTEM_PROMPT
    if not policy.native_tools:
        system += _JSON_PROTOCOL.format(schemas=json.dumps([tool["function"] for tool in tools], ensure_ascii=False))
    run.messages = [{"role": "system", "content": system}, {"role": "user", "content": task.description}]
    error: tuple[ErrorType, str] | None = None
    system_failure = False  # only an error of adp's machinery makes it one (AdpError.system_failure)
    verifier: VerifierResult | None = None
    try:
        async with asyncio.timeout(task.timeout) as budget, _browser_session(task, browser) as session:
            run.session, run.deadline = session, budget.when()
            if session is not None and session.utterance:
                run.messages[1]["content"] += f"\n\nThe page says: {session.utterance}"
            error = await _loop(run, policy, sandbox, sandbox_limits, tools, limits)
            if browser is not None and browser.screenshots == "final":
                last = next((s for s in reversed(run.steps) if s.action_type is ActionType.BROWSER_ACTION), None)
                await _screenshot(run, last)  # before verification, which only reads the page
            if error is None:
                verifier = await verify_task(task, run.answer, run.last_good_code, sandbox, sandbox_limits, session)
                if verifier is not None:  # details are for people: a page URL's token is not shown
                    verifier = verifier.model_copy(update={"details": redact(verifier.details)})
                if verifier is not None and not verifier.passed:
                    error = (ErrorType.RUNTIME_ERROR, f"verification failed: {verifier.details}")
    except TimeoutError:
        error = (ErrorType.TIMEOUT, f"task timeout of {task.timeout} s reached")
        if run.session is not None and not run.session.browser_connected():
            # Calls to a browser killed under them can hang until their own timeouts: the
            # cause is the browser, and a browser failure is retried on a relaunched one.
            error = (ErrorType.BROWSER_ERROR, f"the browser died under the task ({error[1]})")
            system_failure = True
        elif run.asking and not run.answered:
            # The model never answered at all: an endpoint that accepts and never replies (its
            # HTTP timeout times its retries outlast the task's) is not the agent's slowness.
            error = (ErrorType.LLM_ERROR, _unanswered(policy, task))
            system_failure = True
    except LLMError as exc:
        error, system_failure = (exc.error_type, str(exc)), exc.system_failure
        if exc.attempts:
            run.llm_calls.append(LLMCall(attempts=exc.attempts, failed=True))
    except AdpError as exc:  # the browser, the sandbox or the oracle failed the task
        error, system_failure = (exc.error_type, str(exc)), exc.system_failure
    if error is not None and not system_failure and run.sandbox_failure is not None:
        # A task that failed after the sandbox could not run its code cannot be judged: no
        # sandbox (bwrap missing, say) must not read as code that merely failed.
        error = (ErrorType.SYSTEM_ERROR, f"{run.sandbox_failure}; the task then failed: {error[1]}")
        system_failure = True
    metadata: dict[str, Any] = {"expected_tools": list(task.expected_tools)}
    if run.session is not None:
        metadata["blocked_urls"] = run.session.blocked
        if run.session.utterance is not None:
            metadata["utterance"] = run.session.utterance
    return Trajectory(
        task_id=task.task_id,
        task_type=task.task_type,
        runtime_id=RUNTIME_ID,
        success=error is None,
        steps=run.steps,
        final_result=run.answer or "",
        error_type=error[0] if error else None,
        error_message=redact(error[1]) if error else None,  # text for people; the steps keep what happened
        system_failure=system_failure,
        total_duration=time.monotonic() - started,
        metadata=metadata,
        messages=run.messages,
        tools=tools,
        policy=policy.name,
        model=policy.model,
        provider=policy.provider,
        usage=run.usage,
        llm_calls=run.llm_calls,
        verifier=verifier,
        attempts=1,
        lineage=task.lineage,
    )


@contextlib.asynccontextmanager
async def _browser_session(task: TaskSpec, browser: BrowserPool | None) -> AsyncIterator[BrowserSession | None]:
    if "browser" not in TOOLS_BY_TYPE[task.task_type]:
        yield None
        return
    if browser is None:
        raise BrowserError(f"{task.task_type} tasks need a browser, and this runner has none")
    allowlist = task_allowlist(task)
    async with EgressProxy(allowlist) as proxy, browser.context(proxy=proxy.url) as context:
        # Playwright calls on a browser that died under them may never return; opening the
        # page is bounded, so such a task fails as a browser error (and is retried), not as
        # its own timeout.
        try:
            session = await asyncio.wait_for(BrowserSession.open(context, task, allowlist), browser.action_timeout * 4)
        except TimeoutError as exc:
            raise BrowserError(f"opening the task's page took over {browser.action_timeout * 4:g} s") from exc
        yield session


def _unanswered(policy: Policy, task: TaskSpec) -> str:
    where = f"{policy.provider} at {policy.client.endpoint.shown_url}" if isinstance(policy, LLMPolicy) else policy.name
    return (
        f"the model ({where}) did not answer within the task's timeout of {task.timeout:g} s, and no call of this "
        "task was answered: check that the endpoint is up and serving (`adp doctor`), or give tasks a longer timeout"
    )


def failed_trajectory(
    task: TaskSpec, policy: Policy, error_type: ErrorType, message: str, *, system_failure: bool = True
) -> Trajectory:
    """The trajectory of a task that could not run at all under ``policy`` (by default, a system failure)."""
    return Trajectory.failed(
        task,
        error_type,
        redact(message),
        policy=policy.name,
        model=policy.model,
        provider=policy.provider,
        system_failure=system_failure,
    )


async def _loop(
    run: _Run,
    policy: Policy,
    sandbox: Sandbox,
    sandbox_limits: SandboxLimits,
    tools: list[dict[str, Any]],
    limits: AgentLimits,
) -> tuple[ErrorType, str] | None:
    task = run.task
    for _ in range(task.max_steps):
        run.asking = True
        turn = await policy.next_turn(task, run.messages, tools)
        run.asking = False
        run.answered = run.answered or turn.llm is None or not turn.llm.cached
        _account(run, turn)
        run.messages.append(turn.message)
        if run.usage.total_tokens > limits.token_budget:
            return ErrorType.LLM_ERROR, f"token budget of {limits.token_budget} exceeded ({run.usage.total_tokens})"
        calls = _tool_calls(turn.message, policy.native_tools)
        if not calls:
            run.messages.append(_nudge(policy.native_tools))
            continue
        for call_id, name, raw_arguments in calls:
            if len(run.steps) >= task.max_steps:
                _reply(run, policy.native_tools, call_id, "not run: the step budget is exhausted")
                continue
            observation = await _execute(run, name, raw_arguments, sandbox, sandbox_limits)
            _reply(run, policy.native_tools, call_id, observation)
            if run.answer is not None:
                return None
    return ErrorType.LLM_ERROR, f"complete_task was not called within max_steps={task.max_steps}"


async def _execute(run: _Run, name: str, raw_arguments: str, sandbox: Sandbox, limits: SandboxLimits) -> str:
    """Run one tool call, record it as a step, and return the observation for the model."""
    started, timestamp = time.monotonic(), time.time()
    step_id = len(run.steps) + 1
    tool = known_tool(name)
    try:
        arguments = json.loads(raw_arguments) if raw_arguments else {}
        if tool is None:
            raise ValueError(f"unknown tool {name!r}; the tools are {', '.join(TOOL_ARGS)}")
        parsed = TOOL_ARGS[tool].model_validate(arguments)
        if isinstance(parsed, BrowserArgs):
            parse_browser_action(parsed.model_dump())  # each action's own required arguments
    except (ValueError, ValidationError) as exc:
        message = f"invalid call of {name}: {exc}"
        run.steps.append(
            Step(
                step_id=step_id,
                action_type=ActionType.TOOL_CALL,
                tool=tool or "unknown",
                action_params={"raw_arguments": raw_arguments}
                if tool
                else {"name": name, "raw_arguments": raw_arguments},
                observation=message,
                success=False,
                error_type=ErrorType.LLM_ERROR,
                error_message=message,
                timestamp=timestamp,
                duration=time.monotonic() - started,
            )
        )
        return message

    action_type = {
        CompleteTaskArgs: ActionType.TOOL_CALL,
        BrowserArgs: ActionType.BROWSER_ACTION,
        PythonExecutorArgs: ActionType.CODE_EXECUTION,
    }[type(parsed)]

    def record(observation: str, success: bool, error_type: ErrorType | None, error_message: str | None) -> str:
        run.steps.append(
            Step(
                step_id=step_id,
                action_type=action_type,
                tool=tool or "unknown",
                action_params=parsed.model_dump(exclude_none=True),
                observation=observation,
                success=success,
                error_type=error_type,
                error_message=error_message,
                timestamp=timestamp,
                duration=time.monotonic() - started,
            )
        )
        return observation

    try:
        if isinstance(parsed, CompleteTaskArgs):
            run.answer = parsed.answer
            return record("task completed", True, None, None)
        if isinstance(parsed, BrowserArgs):
            assert run.session is not None, "browser tools are only offered with a browser session"
            outcome = await run.session.act(parse_browser_action(parsed.model_dump()))
            observation = record(outcome.observation, outcome.success, outcome.error_type, outcome.error_message)
        else:
            assert isinstance(parsed, PythonExecutorArgs)
            result = await sandbox.exec_python(parsed.code, limits)
    except asyncio.CancelledError:  # the task's timeout: the action it interrupted is still a step
        message = f"cut short by the task timeout of {run.task.timeout} s"
        record(f"[timeout] {message}", False, ErrorType.TIMEOUT, message)
        raise
    if isinstance(parsed, BrowserArgs):
        # Taken once the step is recorded: a timeout during the capture leaves the step as it was.
        if run.browser is not None and run.browser.screenshots == "every":
            await _screenshot(run, run.steps[-1])
        return observation
    if result.ok:
        run.last_good_code = parsed.code
    run.sandbox_failure = run.sandbox_failure or sandbox_failure(result)
    error_message = None if result.ok else result.stderr.strip()[-500:] or str(result.status)
    return record(_observation(result), result.ok, result.status.error_type, error_message)


async def _screenshot(run: _Run, step: Step | None) -> None:
    """Attach a JPEG of the page as it is now to ``step``, a browser step (None: no step has one).

    What the capture cannot give (a page that will not render, a size over the cap) leaves the
    step without, and never fails the task.
    """
    browser, session = run.browser, run.session
    if browser is None or session is None or step is None:
        return
    # At most half the time the task has left: a slow capture must not be what times it out.
    left = math.inf if run.deadline is None else run.deadline - asyncio.get_running_loop().time()
    bound = min(browser.action_timeout, left / 2)
    if bound >= _MIN_SCREENSHOT_SECONDS:
        step.screenshot = await session.screenshot(browser.screenshot_max_bytes, bound, browser.screenshot_scale)


def _observation(result: ExecResult) -> str:
    """stdout, then stderr, cut to OBSERVATION_CHARS; each cut says how much there really was."""
    text = result.stdout
    if result.stderr:
        text += ("\n" if text else "") + result.stderr
    if not result.ok:
        text = f"[{result.status}] {text}"
    if len(text) > OBSERVATION_CHARS:
        text = text[:OBSERVATION_CHARS] + f"\n[... truncated: {len(text)} characters in all]"
    for stream, size in (("stdout", result.stdout_truncated_from), ("stderr", result.stderr_truncated_from)):
        if size is not None:
            text += f"\n[{stream} was {size} bytes; the sandbox kept the first {len(getattr(result, stream).encode())}]"
    return text or "(no output)"


def _tool_calls(message: dict[str, Any], native: bool) -> list[tuple[str | None, str, str]]:
    if native:
        return [
            (call.get("id"), call["function"]["name"], call["function"].get("arguments") or "")
            for call in message.get("tool_calls") or []
        ]
    try:
        data = json.loads(message.get("content") or "")
    except json.JSONDecodeError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return []
    return [(None, data["tool"], json.dumps(data.get("arguments") or {}))]


def _reply(run: _Run, native: bool, call_id: str | None, observation: str) -> None:
    if native:
        run.messages.append({"role": "tool", "tool_call_id": call_id, "content": observation})
    else:
        run.messages.append({"role": "user", "content": f"Observation:\n{observation}"})


def _nudge(native: bool) -> dict[str, Any]:
    if native:
        return {"role": "user", "content": "Call one of the tools; call complete_task when you are done."}
    return {"role": "user", "content": 'Answer with one JSON object: {"tool": "<name>", "arguments": {...}}.'}


def _account(run: _Run, turn: Turn) -> None:
    run.usage = TokenUsage(
        prompt_tokens=run.usage.prompt_tokens + turn.usage.prompt_tokens,
        completion_tokens=run.usage.completion_tokens + turn.usage.completion_tokens,
        total_tokens=run.usage.total_tokens + turn.usage.total_tokens,
    )
    if turn.llm is not None:
        run.llm_calls.append(
            LLMCall(
                attempts=turn.llm.attempts,
                cached=turn.llm.cached,
                request=turn.llm.request,
                response=turn.llm.response,
            )
        )


def _sandbox_limits(task: TaskSpec, defaults: SandboxLimits) -> SandboxLimits:
    override = task.constraints.sandbox
    if override is None:
        return defaults
    return defaults.model_copy(update={key: value for key, value in override.model_dump().items() if value is not None})
