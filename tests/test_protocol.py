from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from runtimes.core import SCHEMA_VERSION, Allowlist, ErrorType, Step, TaskSpec, TaskType, Trajectory

# Verbatim from the seed documents (README task format and user guide).
SEED_LINES = [
    '{"task_id": "reasoning_001", "task_type": "reasoning", "description": "研究PyTorch和TensorFlow的差异", '
    '"expected_tools": ["browser", "python_executor"], "max_steps": 10}',
    '{"task_id": "code_001", "task_type": "code", "description": "计算斐波那契数列", '
    '"expected_tools": ["python_executor"], "max_steps": 5}',
    '{"task_id": "web_001", "task_type": "web", "description": "搜索技术文档", '
    '"expected_tools": ["browser"], "max_steps": 8}',
    '{"task_id": "研究框架对比", "task_type": "reasoning", "description": "研究PyTorch和TensorFlow的主要差异和优劣势", '
    '"expected_tools": ["browser", "python_executor"], "max_steps": 12}',
    '{"task_id": "计算阶乘", "task_type": "code", "description": "计算5的阶乘", "expected_tools": ["python_executor"], '
    '"max_steps": 4}',
    '{"task_id": "搜索文档", "task_type": "web", "description": "在Python官网搜索文档", "expected_tools": ["browser"], '
    '"max_steps": 8}',
]


@pytest.mark.parametrize("line", SEED_LINES)
def test_seed_lines_parse_with_the_seed_defaults(line: str) -> None:
    task = TaskSpec.model_validate_json(line)
    assert task.task_id == json.loads(line)["task_id"]
    assert (task.timeout, task.priority) == (300, 1)
    assert task.constraints.reference_tool_calls is None


def test_full_line_with_constraints_round_trips() -> None:
    line = {
        "task_id": "t",
        "task_type": "web",
        "description": "click it",
        "expected_tools": ["browser"],
        "max_steps": 3,
        "timeout": 60,
        "priority": 10,
        "constraints": {
            "reference_tool_calls": [{"name": "browser", "arguments": {"action": "click", "selector": "#b"}}],
            "verify": {"miniwob_reward": 1.0, "page_contains": "ok"},
            "start_url": "file:///x.html",
            "allowed_urls": ["file:///"],
            "miniwob": {"task": "click-button", "seed": 7},
            "sandbox": {"timeout": 5, "memory_mb": 256},
        },
    }
    task = TaskSpec.model_validate_json(json.dumps(line))
    assert task.task_type is TaskType.WEB
    assert task.constraints.miniwob is not None and task.constraints.miniwob.seed == 7
    assert TaskSpec.model_validate_json(task.model_dump_json()) == task


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task_id": ""}, "task_id"),
        ({"task_id": " padded"}, "task_id"),
        ({"task_id": "a\\b"}, "task_id"),
        ({"task_id": ".."}, "task_id"),
        ({"task_id": "tab\there"}, "task_id"),
        ({"task_id": "x" * 201}, "task_id"),
        ({"task_id": 7}, "task_id"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"timeout": 0}, "timeout"),
        ({"priority": 0}, "priority"),
        ({"expected_tools": []}, "expected_tools"),
        ({"expected_tools": ["browser", "browser"]}, "expected_tools"),
        ({"expected_tools": "browser"}, "expected_tools"),
        ({"constraints": {"sandbox": {"memory_mb": "256"}}}, "constraints"),
        ({"constraints": {"reference_tool_calls": [{"name": "rm_rf"}]}}, "constraints"),
        ({"description": None}, "description"),
        ({"constraints": {"allowed_urls": ["example.com"]}}, "constraints"),
        ({"constraints": {"allowed_urls": ["http://user@example.com/"]}}, "constraints"),
        ({"constraints": {"allowed_urls": ["ftp://example.com/"]}}, "constraints"),
        ({"constraints": {"start_url": "javascript:alert(1)"}}, "constraints"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_named(change: dict[str, object], field: str) -> None:
    line = {
        "task_id": "t",
        "task_type": "code",
        "description": "d",
        "expected_tools": ["python_executor"],
        "max_steps": 3,
    }
    with pytest.raises(ValidationError) as error:
        TaskSpec.model_validate_json(json.dumps({**line, **change}))
    assert error.value.errors()[0]["loc"][0] == field


def test_trajectory_records_carry_the_schema_version_and_round_trip() -> None:
    trajectory = Trajectory(
        task_id="t",
        task_type=TaskType.CODE,
        runtime_id="sandbox-1",
        success=False,
        steps=[
            Step(
                step_id=1,
                action_type="code_execution",
                tool="python_executor",
                action_params={"code": "1/0"},
                observation="ZeroDivisionError",
                success=False,
                error_type=ErrorType.RUNTIME_ERROR,
            )
        ],
        error_type=ErrorType.RUNTIME_ERROR,
        policy="oracle",
    )
    data = json.loads(trajectory.model_dump_json())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["steps"][0]["error_type"] == "runtime_error"
    assert Trajectory.model_validate(data) == trajectory
    assert {e.value for e in ErrorType} >= {"timeout", "network_error", "llm_error", "browser_error", "system_error"}


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://example.com/a/b?q=1", True),
        ("http://EXAMPLE.com./a", True),
        ("ws://example.com/a/socket", True),  # a WebSocket to the same origin and path
        ("http://example.com/ab", False),  # a prefix of a path segment is not the path
        ("http://example.com:8080/a", False),
        ("https://example.com/a", False),
        ("http://example.com@evil.test/a", False),
        ("http://evil.test\\@example.com/a", False),
        ("http://example.com.evil.test/a", False),
        ("http://127.0.0.1:9/x", True),
        ("http://2130706433:9/x", True),  # the same host in decimal, hex and short notation
        ("http://0x7f.0.0.1:9/x", True),
        ("http://127.1:9/x", True),
        ("http://127.0.0.2:9/x", False),
        ("http://[::1]:9/x", False),
        ("file:///etc/passwd", False),
        ("data:text/html,hi", True),
    ],
)
def test_the_allowlist_compares_parsed_urls_never_prefixes(url: str, allowed: bool) -> None:
    allowlist = Allowlist.from_urls(["http://example.com/a", "http://127.0.0.1:9/"])
    assert allowlist.check(url) is allowed
    assert (url in allowlist.blocked) is not allowed
