"""Secrets never shown: the one redaction function, class by class, and a run with secrets
planted in its endpoint and its tasks, grepped on every surface a person reads."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from dagster._serdes import serialize_value

from adp_pipeline.cli import main
from adp_pipeline.defs.markdown import failures_redacted
from adp_pipeline.materialize import failure_reason
from runtimes.core import LLMError, Trajectory, parse_task_file, redact
from runtimes.scale import WorkerMetrics
from runtimes.testing import MockLLMServer, MockScript, free_port
from tests.helpers import code_task, task_line

# --- the function, one secret class at a time ------------------------------------------------

USERINFO = [
    ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://:pa#ss/w@rd?x@host:6379/0", "redis://:***@host:6379/0"),  # '#', '/', '@', '?' in the password
    ("rediss://u:p%40ss@host/0", "rediss://u:***@host/0"),
    ("redis://t0ken@host/0", "redis://***@host/0"),  # a user name alone is often the token
    ("postgres://admin:hunter2@db.internal:5432/app", "postgres://admin:***@db.internal:5432/app"),
    ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:***@h/db"),
    ("https://ghp_user@github.com/o/r.git", "https://***@github.com/o/r.git"),
    ("amqp://guest:guest@rabbit:5672/", "amqp://guest:***@rabbit:5672/"),
    ("(see http://u:p@host)", "(see http://u:***@host)"),
    ("'http://u:p@host/x'", "'http://u:***@host/x'"),
    ("open http://x.org/?next=http://u:p@host/a now", "open http://x.org/?next=http://u:***@host/a now"),
    ("two: http://a:b@one/ and ftp://c:d@two/", "two: http://a:***@one/ and ftp://c:***@two/"),
]

PARAMETERS = [
    ("redis://host:6379/0?password=hunter2&db=1", "redis://host:6379/0?password=***&db=1"),
    ("unix:///run/redis.sock?db=0&PASSWORD=x#y", "unix:///run/redis.sock?db=0&PASSWORD=***"),
    (
        "the URL 'http://site/page?password=pw1&token=tk1&q=ok' does not contain 'x'",
        "the URL 'http://site/page?password=***&token=***&q=ok' does not contain 'x'",
    ),
    ("https://api/v1?api_key=abc", "https://api/v1?api_key=***"),
    (
        "https://s3/b/o?X-Amz-Credential=AKIA/x&X-Amz-Signature=f00d",
        "https://s3/b/o?X-Amz-Credential=***&X-Amz-Signature=***",
    ),
    ("https://blob/c?sv=2020&sig=abc%2Bdef&se=1", "https://blob/c?sv=2020&sig=***&se=1"),
    ("https://app/#access_token=abc&state=1", "https://app/#access_token=***&state=1"),
    ("http://h/p;jsessionid=ABC123", "http://h/p;jsessionid=***"),
    (
        "?user=bob&pass=hunter2&passwd=x&pwd=y&secret=z&auth=w",
        "?user=bob&pass=***&passwd=***&pwd=***&secret=***&auth=***",
    ),
    ("?clientSecret=a&accessToken=b&privateKey=c", "?clientSecret=***&accessToken=***&privateKey=***"),
    ("export OPENAI_API_KEY=value1", "export OPENAI_API_KEY=***"),
    ("f(api_key='v1', password=\"p w\")", "f(api_key='***', password=\"***\")"),
]

FIELDS = [
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("authorization: token abc123", "authorization: token ***"),
    ("Proxy-Authorization: Bearer abc", "Proxy-Authorization: Bearer ***"),
    ("curl -H 'X-Api-Key: abc123' url", "curl -H 'X-Api-Key: ***' url"),
    ('{"password": "hunter2", "user": "bob", "api_key": "k"}', '{"password": "***", "user": "bob", "api_key": "***"}'),
    ("{'token': 'abc', 'n': 1}", "{'token': '***', 'n': 1}"),
    ('{\\"client_secret\\": \\"abc\\"}', '{\\"client_secret\\": \\"***\\"}'),  # JSON inside a JSON string
    ("Password: hunter2", "Password: ***"),
    ("aws_secret_access_key: wJalrXUtnFEMI", "aws_secret_access_key: ***"),  # YAML / ini
    ("Cookie: session=abc", "Cookie: ***"),
]

BEARER = [
    ("Bearer abc.def-ghi", "Bearer ***"),
    ("sent bearer tok_123== to the server", "sent bearer *** to the server"),
]

KEY_SHAPES = [
    ("key sk-abcdefghijklmnopqrstuv", "key sk-***"),
    ("sk-proj-abcdefghijklmnop1234_-x", "sk-proj-***"),
    ("sk-ant-api03-abcdefghijklmnopqrst", "sk-ant-***"),
    ("AIzaSyA1234567890abcdefghijklmnopqrstu", "AIza***"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123", "ghp_***"),
    ("gho_abcdefghijklmnopqrstuvwxyz0123", "gho_***"),
    ("github_pat_11ABCDEFG0abcdefghijklmnop", "github_pat_***"),
    ("glpat-abcdefghijklmnopqrst", "glpat-***"),
    ("id AKIAIOSFODNN7EXAMPLE here", "id AKIA*** here"),
    ("xoxb-1234567890-abcdefghij", "xoxb-***"),
    ("xapp-1-A0123-4567890abc", "xapp-***"),
    ("hf_abcdefghijklmnopqrstuvwxyz", "hf_***"),
    ("sk_live_abcdefghij0123", "sk_live_***"),
    ("gsk_abcdefghijklmnopqrstuvwx", "gsk_***"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4", "jwt eyJ***"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- after",
        "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY----- after",
    ),
    ("cut: -----BEGIN PRIVATE KEY-----\nMIIabc", "cut: -----BEGIN PRIVATE KEY-----***"),  # truncated: withheld
]

# The forms a secret also takes: spaces around '=', command lines, an auth scheme after '=',
# percent-encoding, PGP keys, URLs whose path is the secret, user:password without a scheme, XML.
FORMS = [
    ("password = S3CRET", "password = ***"),
    ("token = 'x'", "token = '***'"),
    ("SECRET_KEY = 'django-insecure-9x$k'", "SECRET_KEY = '***'"),
    (
        "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPx",
        "[default]\naws_access_key_id = ***\naws_secret_access_key = ***",
    ),
    ('db_password = "hunter2"  # TOML', 'db_password = "***"  # TOML'),
    ('os.environ["OPENAI_API_KEY"] = "v1"', 'os.environ["OPENAI_API_KEY"] = "***"'),
    ("mysqladmin --password=x status", "mysqladmin --password=*** status"),
    ("tool --api-key=k-123 --verbose", "tool --api-key=*** --verbose"),
    ("gh --auth-token x run", "gh --auth-token *** run"),
    ("cli --token x", "cli --token ***"),
    ('cli --client-secret "p w" next', 'cli --client-secret "***" next'),
    ("curl -u bob:pw https://h/", "curl -u bob:*** https://h/"),
    ("curl --user=bob:pw -ualice:pw2 https://h/", "curl --user=bob:*** -ualice:*** https://h/"),
    ("Authorization=Bearer x", "Authorization=Bearer ***"),
    ("headers(Authorization=Basic dXNlcjpwYXNz)", "headers(Authorization=Basic ***)"),
    ("password%3Dx", "password%3D***"),
    ("?next=https%3A%2F%2Fx%2F%3Ftoken%3Dx%26page%3D2", "?next=https%3A%2F%2Fx%2F%3Ftoken%3D***%26page%3D2"),
    (
        "?r=http%253A%252F%252Fh%252F%253Fapi_key%253Dk%2526a%253D1",
        "?r=http%253A%252F%252Fh%252F%253Fapi_key%253D***%2526a%253D1",
    ),
    ("https%3A%2F%2Fuser%3Apw%40host%2Fdb", "https%3A%2F%2Fuser%3A***%40host%2Fdb"),
    ("go?u=https%253A%252F%252Fuser%253Apw%2540host", "go?u=https%253A%252F%252Fuser%253A***%2540host"),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF0\n-----END PGP PRIVATE KEY BLOCK----- after",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----***-----END PGP PRIVATE KEY BLOCK----- after",
    ),
    ("https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXX", "https://hooks.slack.com/services/***"),
    (
        "https://discord.com/api/webhooks/123456789012345678/AbCdEf-gh_IJ",
        "https://discord.com/api/webhooks/123456789012345678/***",
    ),
    (
        "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe",
        "https://api.telegram.org/bot123456789:***/getMe",
    ),
    (
        "https://acme.webhook.office.com/webhookb2/a1@b2/IncomingWebhook/c3",
        "https://acme.webhook.office.com/webhookb2/***",
    ),
    ("//user:pw@host/x", "//user:***@host/x"),
    ("git clone user:pw@host:/repo.git", "git clone user:***@host:/repo.git"),
    ("dsn user:p@ss@tcp(db:3306)/app", "dsn user:***@tcp(db:3306)/app"),
    ("<password>x</password>", "<password>***</password>"),
    ("<Config><ApiKey> k-123 </ApiKey></Config>", "<Config><ApiKey> *** </ApiKey></Config>"),
    ("<key>Password</key>\n<string>hunter2</string>", "<key>Password</key>\n<string>***</string>"),
    ("Cookie: sid=abc; csrftoken=def", "Cookie: ***"),
    ("machine api.h login bob password hunter2", "machine api.h login bob password ***"),
    ('"api_key": "abc', '"api_key": "***'),  # a message cut inside the value: the rest of its line
]

# Code, as a traceback shows it, and words that are no secret: left as they are.
CODE = [
    "sorted(xs, key=len)",
    "def f(key=None, token_count=3):",
    "sorted(items, key=lambda x: x[1])",
    "{'key': 'value'}",
    '{"auth": true, "key": 5}',
    "Primary key: id",
    "pass: 10/10 tests",
    "sig: SIGKILL",
    "key_count=12 password_length=12 token_type=bearer sig_figs=3",
    "key_count=3",  # was redacted by the any-word rule: a measure word now ends the name
    "def login(self, token: str, password: Optional[str] = None) -> None:",
    "token = get_token()",
    "secret = os.environ['SECRET_NAME']",
    "client = OpenAI(api_key=settings.api_key)",
    "token = self._token",
    "grant_type=password&response_type=token",
    'WWW-Authenticate: Bearer realm="api"',
    "token_type=bearer expires_in=3600",
    "let t = Token::new(x);",
    "docker run -u 1000:1000 img",
    "docker login --password-stdin registry.example.com",
    "sort --key 2 file --no-auth ok",
    "items.map(key => key.id)",
    "export PASSWORD=$DB_PASSWORD",
    "at 12:30@home",
]

# What must come out as it went in: ordinary URLs, words that contain a secret word, code.
UNCHANGED = [
    "https://example.com/path?q=1&page=2#top",
    "https://medium.com/@user/post?x=1",  # an '@' in a path is no password
    "http://localhost:3000/@vite/client",
    "http://[::1]:8080/@x",
    "mailto:bob@example.com and git@github.com:o/r.git",
    "the monkey ate a keyboard; turkey=3 monkey=banana keyboard=qwerty",
    "max_tokens=100 tokens: 5 n_keys=2",  # `tokens` and `keys` are not the words
    "KeyError: 'token'",  # an exception name ending in Error is no secret field
    "if key == 3 and a <= b: x = y",
    "sk-learn is not a key; ghp_short neither",
    "a task_id=web_001 with max_steps=5",
    "",
    "日本語のテキスト password",
]


@pytest.mark.parametrize(("text", "shown"), USERINFO + PARAMETERS + FIELDS + BEARER + KEY_SHAPES + FORMS)
def test_each_secret_class_is_redacted(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # idempotent


@pytest.mark.parametrize("text", UNCHANGED + CODE)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


# Shapes that made a backtracking pattern rescan a run from each of its characters: runs of
# brackets, separators, quotes, names, flags, encodings, tags. Each repeated to 100 KB (a
# sandbox's stderr is up to 64 KB; a model's answer, a page's URL are the agent's to choose).
ADVERSARIAL = [
    "[", "]", "[a", "=", ":", "@", "/", "%", '"', "'", "a=", "key=", "https://", " ", "\t\n", "-", "\\",
    "token =", 'key="', 'token: "', "key: key:", "token=token", "--token ", "-ua:", "(a:", "a:a@", "//a:b@",
    "%3A%2F%2Fa%3A", "%3Ftoken%3D", "%25", "<password>", "<key>a</key><string>", "bearer+", "Bearer a ",
    "eyJaaaaaaaaa.", "bot1234567:", '\\"', "$", "key[", "a.b", "www.", "sk-", "Authorization: Bearer ",
    "-----BEGIN PRIVATE KEY-----\n", "login a password ",
]  # fmt: skip
_SIZE = 100_000


def _adversarial() -> list[str]:
    texts = [(unit * (_SIZE // len(unit) + 1))[:_SIZE] for unit in [*ADVERSARIAL, "".join(ADVERSARIAL)]]
    texts += ["[" * _SIZE + ":", "[a" * (_SIZE // 2) + ":", "a" * _SIZE + ":", "token=" + "a" * _SIZE]
    texts += ['token: "' + "a " * (_SIZE // 2), "key: " + "[a" * (_SIZE // 2)]
    return texts


def test_adversarial_text_is_redacted_in_linear_time() -> None:
    for text in _adversarial():
        started = time.monotonic()
        shown = redact(text)
        elapsed = time.monotonic() - started
        # ~0.1 s here; the quadratic patterns took 1.4 s on 5 KB of '[' and 88 s on 40 KB.
        assert elapsed < 1.0, (text[:40], elapsed)
        assert redact(shown) == shown, text[:40]


def test_redaction_is_idempotent_on_mixed_text() -> None:
    """Random mixtures of secrets, code and separators: a second pass never finds more."""
    pieces = [text for text, _ in USERINFO + PARAMETERS + FIELDS + BEARER + KEY_SHAPES + FORMS]
    pieces += UNCHANGED + CODE + ["=", ":", "@", "&", "?", "%3D", '"', "'", " ", "\n", "--", "-u ", "***", "//"]
    generator = random.Random(17)
    for _ in range(400):
        text = "".join(generator.choice(pieces) for _ in range(generator.randint(1, 6)))
        shown = redact(text)
        assert redact(shown) == shown, text


def test_it_never_raises_and_stays_fast_on_hostile_text() -> None:
    hostile = [
        "http://" + "@" * 200_000,
        "http://h/" + "x/@" * 100_000,
        'key="' * 100_000,
        'token: "' * 100_000,
        "a-" * 200_000,
        "\\" * 200_000,
        "http://" * 50_000,
        "-----BEGIN PRIVATE KEY-----" * 10_000,
        "\x00\udcff" * 1000,  # a lone surrogate, as undecodable bytes leave in text
    ]
    started = time.monotonic()
    for text in hostile:
        assert isinstance(redact(text), str)
    assert time.monotonic() - started < 10  # linear: a quadratic scan of these takes minutes
    assert redact(42) == "42"  # type: ignore[arg-type]  # a caller passing a non-string still gets text


def test_a_secret_inside_json_text_and_a_url_inside_a_url_are_found() -> None:
    data = {"error": "custom at http://me:pw-123@llm/v1?api_key=k-456 failed", "auth": {"password": "p-789"}}
    shown = redact(json.dumps(data))
    for secret in ("pw-123", "k-456", "p-789"):
        assert secret not in shown
    assert json.loads(shown)["error"] == "custom at http://me:***@llm/v1?api_key=*** failed"


# --- a run with planted secrets, every surface grepped ---------------------------------------

# Secrets of the configuration: they may appear nowhere adp writes or prints.
ENDPOINT_PASSWORD, ENDPOINT_KEY, API_KEY = "endpoint-pw-7f3a91", "endpoint-key-9c2e55", "sk-planted0123456789abcdef"
# Secrets in the tasks (a page URL's query, what the code prints): the steps keep them, as the
# agent did them; text about the run (errors, verifier details, tables, logs) never shows them.
PAGE_PASSWORD, PAGE_TOKEN, BEARER_TOKEN = "page-pw-41d8aa", "page-token-b6e0bb", "bearer-tok-5a1ccc"
ENDPOINT_SECRETS = (ENDPOINT_PASSWORD, ENDPOINT_KEY, API_KEY)
TASK_SECRETS = (PAGE_PASSWORD, PAGE_TOKEN, BEARER_TOKEN)
PAGE_URL = f"http://adp.local/index.html?password={PAGE_PASSWORD}&token={PAGE_TOKEN}"


def _planted_tasks(path: Path) -> Path:
    web = task_line(
        "web_secret_url",
        "web",
        description="Open the shop with the link you were given.",
        timeout=60,
        constraints={
            "start_url": PAGE_URL,
            "reference_tool_calls": [
                {"name": "browser", "arguments": {"action": "goto", "url": PAGE_URL}},
                {"name": "complete_task", "arguments": {"answer": "opened"}},
            ],
            "verify": {"url_contains": "checkout-complete"},  # fails, showing the page's URL
        },
    )
    printed = f"postgres://app:{PAGE_PASSWORD}@db/x Authorization: Bearer {BEARER_TOKEN}"
    code = code_task(
        "code_secret_details",
        f"print({printed!r})",
        "done",
        tests=f"assert False, 'GET http://api.internal/v1?token={PAGE_TOKEN}&password={PAGE_PASSWORD}'",
        description="Print the connection string.",
    )
    path.write_text(web + "\n" + code + "\n")
    return path


def _flat(text: str) -> str:
    """``text`` without spaces, line breaks and table borders: a secret that a table cell folded
    over two lines is whole again."""
    return re.sub(r"[^\w:/@?&=*.+-]+", "", text)


def _lake_rows(data: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every Parquet file of the lake, by table (decoded: Parquet compresses)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for file in (data / "lake").rglob("*.parquet"):
        table = file.relative_to(data / "lake").parts[0]
        rows.setdefault(table, []).extend(pq.read_table(file).to_pylist())
    return rows


def _files_as_text(data: Path) -> dict[str, str]:
    """Every file under the data dir as text: Parquet decoded, the rest (JSON, SQLite event logs,
    compute logs, caches) as its bytes."""
    texts = {}
    for file in data.rglob("*"):
        if file.is_file():
            if file.suffix == ".parquet":
                texts[str(file)] = json.dumps(pq.read_table(file).to_pylist(), default=str)
            else:
                texts[str(file)] = file.read_bytes().decode("utf-8", errors="replace")
    return texts


def _event_log(home: Path) -> list[str]:
    """What the Dagster instance recorded of every run: each event, message and metadata, serialised."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        return [
            serialize_value(entry)
            for record in instance.get_run_records()
            for entry in instance.all_logs(record.dagster_run.run_id)
        ]
    finally:
        instance.dispose()


def test_planted_secrets_show_on_no_surface_while_the_steps_keep_what_the_agent_did(tmp_path: Path) -> None:
    data = tmp_path / "data"
    tasks = _planted_tasks(tmp_path / "planted.jsonl")
    runner = CliRunner()
    common = {"ADP_DATA_DIR": str(data), "ADP_LLM_MODEL": "mock", "ADP_LLM_API_KEY": API_KEY, "ADP_POLICY": "llm"}
    with MockLLMServer(MockScript.from_tasks(item.task for item in parse_task_file(tasks).accepted)) as server:
        # 1. An endpoint that works, its password in the URL: the tasks run, and fail verification.
        working = f"http://planted-user:{ENDPOINT_PASSWORD}@127.0.0.1:{server.port}/v1"
        ran = runner.invoke(main, ["run", str(tasks)], env={**common, "ADP_LLM_BASE_URL": working})
    assert ran.exit_code == 0, ran.output
    # 2. An endpoint that does not answer, with user information and an api_key parameter:
    # every task ends as llm_error, with a message that names the endpoint; no task of the batch
    # ran, so the run fails, saying so (the system-failure check's reason, in the same words).
    failing = f"http://planted-user:{ENDPOINT_PASSWORD}@127.0.0.1:{free_port()}/v1?api_key={ENDPOINT_KEY}"
    env = {**common, "ADP_LLM_BASE_URL": failing, "ADP_LLM_MAX_ATTEMPTS": "1"}
    second = tmp_path / "again.jsonl"
    second.write_text(code_task("code_endpoint_down", "print(1)", "1") + "\n")
    down = runner.invoke(main, ["run", str(second)], env=env)
    assert down.exit_code == 1 and "not_all_system_failures" in down.output, down.output
    doctor = runner.invoke(main, ["doctor"], env=env)

    cli = {"adp run": ran.stdout + ran.stderr, "adp run (endpoint down)": down.stdout + down.stderr}
    cli["adp doctor"] = doctor.stdout + doctor.stderr
    cli = {name: _flat(text) for name, text in cli.items()} | {
        f"{name} (as printed)": text for name, text in cli.items()
    }
    lake = _lake_rows(data)
    outputs = {p.name: json.loads(p.read_text()) for p in (data / "output" / "trajectories").glob("*.json")}
    events = _event_log(data / "dagster")
    metrics = WorkerMetrics()
    for record in outputs.values():
        metrics.record("code", Trajectory.model_validate(record))

    # Each surface says what happened, in redacted words (the greps below are not vacuous).
    assert "password=***&token=***" in cli["adp run"]  # the web task's verifier detail in the failures table
    assert "customathttp://planted-user:***@127.0.0.1" in cli["adp run (endpoint down)"]
    assert "api_key=***" in cli["adp run (endpoint down)"]
    assert "athttp://planted-user:***@127.0.0.1" in cli["adp doctor"]
    errors = {row["task_id"]: row["error_message"] for row in lake["trajectories"]}
    assert "password=***&token=***" in errors["web_secret_url"]
    assert "token=***&password=***" in errors["code_secret_details"]
    assert "planted-user:***@" in errors["code_endpoint_down"] and "api_key=***" in errors["code_endpoint_down"]
    top_errors = [event for event in events if "top_errors" in event]
    assert top_errors and any("password\\\\=\\\\*\\\\*\\\\*" in event for event in top_errors)  # escaped Markdown
    assert len(outputs) == 3

    # The configuration's secrets: on no surface at all, in no file adp wrote.
    texts = {**cli, **_files_as_text(data), "event log": "\n".join(events), "metrics": metrics.render().decode()}
    for name, text in texts.items():
        for secret in ENDPOINT_SECRETS:
            assert secret not in text, (secret, name)

    # The tasks' secrets: never in text about the run...
    about_the_run = {**cli, "event log": "\n".join(events), "metrics": metrics.render().decode()}
    for row in lake["trajectories"]:
        about_the_run[f"lake {row['task_id']}"] = json.dumps([row["error_message"], row["verifier"], row["provider"]])
    for name, record in outputs.items():
        about_the_run[f"output {name}"] = json.dumps(
            [record["error_message"], record["verifier"], record["provider"], record["model"]]
            + [attempt["error"] for call in record["llm_calls"] for attempt in call["attempts"]]
        )
    for name, text in about_the_run.items():
        for secret in TASK_SECRETS:
            assert secret not in text, (secret, name)
    # ...while the steps keep what the agent did: the URL it opened, what its code printed.
    steps = {(row["task_id"], row["step_id"]): row for row in lake["steps"]}
    assert PAGE_URL in steps[("web_secret_url", 1)]["action_params"]
    assert (
        f"{PAGE_PASSWORD}@db/x Authorization: Bearer {BEARER_TOKEN}" in steps[("code_secret_details", 1)]["observation"]
    )
    web = outputs[next(name for name in outputs if name.startswith("web_secret_url"))]
    assert web["steps"][0]["action_params"]["url"] == PAGE_URL


def test_an_asset_failure_reaches_the_event_log_and_the_cli_line_redacted(instance: dg.DagsterInstance) -> None:
    @dg.asset
    @failures_redacted()
    def leaky() -> None:
        try:
            raise ConnectionError(f"cannot reach http://me:{ENDPOINT_PASSWORD}@llm.internal/v1")
        except ConnectionError as exc:
            raise LLMError(
                f"custom at http://me:{ENDPOINT_PASSWORD}@llm.internal/v1?api_key={ENDPOINT_KEY} failed"
            ) from exc

    @dg.asset
    @failures_redacted()
    def plain() -> None:
        raise ValueError("nothing secret here")

    result = dg.materialize([leaky], instance=instance, raise_on_error=False)
    assert not result.success
    logged = [serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    for secret in (ENDPOINT_PASSWORD, ENDPOINT_KEY):
        assert not any(secret in entry for entry in logged)
    assert failure_reason(result) == "leaky: ConnectionError: cannot reach http://me:***@llm.internal/v1"
    # A failure with nothing to hide is left as it was: its own type, message and cause.
    result = dg.materialize([plain], instance=instance, raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    assert failure.step_failure_data.error.cause.cls_name == "ValueError"
    assert failure_reason(result) == "plain: ValueError: nothing secret here"
