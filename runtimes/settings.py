"""Configuration from the environment and an optional ``.env`` file: the one place adp reads it.

Names follow the seed documents where they define one (REDIS_URL, TASK_FILE,
MAX_CONCURRENT_TASKS, TASK_TIMEOUT, ENABLE_CACHE, CACHE_TTL, METRICS_PORT, the providers'
API keys); adp's own settings are prefixed ``ADP_`` except TASKS_DIR. The environment wins
over ``.env``. Each component gets its typed config from here (:attr:`Settings.sandbox_config`,
``browser_config``, ``llm_config``, ``policy_config``), whose ``build``/``client``/``open``
is the one factory local runs and `adp worker` share; the broker reads its own
(:meth:`runtimes.scale.BrokerConfig.from_settings`). The README lists every setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtimes.core import DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_TASK_LINES, PolicyName, ScreenshotMode

# The training-set formats: adp_pipeline.export.formats.REGISTRY has one Format for each.
ExportFormat = Literal["openai", "trl", "sharegpt", "atif"]

if TYPE_CHECKING:  # the components (Redis, Playwright, the sandbox) load when first configured
    from runtimes.llm import FileResponseCache, LLMConfig, PolicyConfig
    from runtimes.sandbox import SandboxConfig
    from runtimes.web import BrowserConfig


def _env_file() -> str | None:
    """ADP_ENV_FILE names the dotenv file read (default ``.env`` in the working directory); empty: none."""
    return os.environ.get("ADP_ENV_FILE", ".env") or None


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every setting adp reads, with its default."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True, env_ignore_empty=True)

    def __init__(self, **values: Any) -> None:
        # Which dotenv file is read when the settings are built, at the edge, never at import.
        values.setdefault("_env_file", _env_file())
        super().__init__(**values)

    data_dir: Path = Field(Path("data"), validation_alias=_env("ADP_DATA_DIR"))
    """Root of the Parquet lake, the DuckDB catalog, registered task files and Dagster's instance."""
    tasks_dir_override: Path | None = Field(None, validation_alias=_env("TASKS_DIR"))
    """The folder the sensor watches for new ``*.jsonl`` task files (default ``<data_dir>/inbox``)."""
    task_file: Path | None = Field(None, validation_alias=_env("TASK_FILE"))
    """The file ``adp run`` processes when given none."""
    tasks_settle_seconds: float = Field(2.0, ge=0, validation_alias=_env("ADP_TASKS_SETTLE_SECONDS"))
    """A file in TASKS_DIR is picked up only once unmodified this long (it may still be written)."""
    sensor_interval_seconds: int = Field(30, ge=1, validation_alias=_env("ADP_SENSOR_INTERVAL_SECONDS"))
    max_task_line_bytes: int = Field(DEFAULT_MAX_LINE_BYTES, ge=1024, validation_alias=_env("ADP_MAX_TASK_LINE_BYTES"))
    """Longer task lines are rejected unread, and the copy in ``task_files/`` keeps only their size."""
    max_task_lines: int = Field(DEFAULT_MAX_TASK_LINES, ge=1, validation_alias=_env("ADP_MAX_TASK_LINES"))
    """Non-blank lines of one task file that are parsed; the rest become one reject naming them."""
    task_timeout: int = Field(300, ge=1, validation_alias=_env("TASK_TIMEOUT"))
    """Seconds a task may run when its line gives no ``timeout``."""
    max_concurrent_tasks: int = Field(10, ge=1, validation_alias=_env("MAX_CONCURRENT_TASKS"))
    commit_every_tasks: int = Field(200, ge=1, validation_alias=_env("ADP_COMMIT_EVERY_TASKS"))
    """A running batch commits its finished trajectories every this many tasks (or seconds, below):
    a crash loses at most that much work, and a re-run resumes after it."""
    commit_every_seconds: float = Field(30.0, gt=0, validation_alias=_env("ADP_COMMIT_EVERY_SECONDS"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    enable_cache: bool = Field(True, validation_alias=_env("ENABLE_CACHE"))
    cache_ttl: int = Field(3600, ge=0, validation_alias=_env("CACHE_TTL"))
    max_concurrent: int = Field(4, ge=1, validation_alias=_env("MAX_CONCURRENT"))
    """Browser contexts at once: web and reasoning tasks running together (~100 MB each)."""
    browser_memory_mb: int = Field(2048, ge=256, validation_alias=_env("ADP_BROWSER_MEMORY_MB"))
    """Relaunch the idle browser when all its processes together use more than this."""
    browser_action_timeout: float = Field(10.0, gt=0, validation_alias=_env("ADP_BROWSER_ACTION_TIMEOUT"))
    chromium_path: Path = Field(Path("/usr/bin/chromium"), validation_alias=_env("ADP_CHROMIUM_PATH"))
    """The system Chromium Playwright drives (never a downloaded one)."""
    screenshots: ScreenshotMode = Field("every", validation_alias=_env("ADP_SCREENSHOTS"))
    """A JPEG of the page's viewport after every browser action (every), after a task's last one
    only (final), or none (off); stored in the lake under ``screenshots/`` and shown by `adp view`."""
    screenshot_max_bytes: int = Field(150_000, ge=1024, validation_alias=_env("ADP_SCREENSHOT_MAX_BYTES"))
    """A screenshot larger than this is taken again at a lower JPEG quality, then left out (the step stays)."""
    screenshot_scale: float = Field(0.5, gt=0, le=1, validation_alias=_env("ADP_SCREENSHOT_SCALE"))
    """A screenshot's size relative to the viewport (0.5: 640x360 of 1280x720; the page is drawn at
    that scale, so text stays sharp; 1 costs ~3x the browser's CPU per screenshot)."""
    policy: PolicyName = Field("llm", validation_alias=_env("ADP_POLICY"))
    """Who acts in the agent loop: oracle (replays reference calls), mock, or llm."""
    output_dir_override: Path | None = Field(None, validation_alias=_env("ADP_OUTPUT_DIR"))
    """Per-task trajectory JSON goes to ``<output_dir>/trajectories/<task_id>.json``."""
    success_threshold: float = Field(0.8, ge=0, le=1, validation_alias=_env("ADP_SUCCESS_THRESHOLD"))
    """The success-rate check fails for a task type whose verified success rate is below this."""
    token_budget: int = Field(200_000, ge=1, validation_alias=_env("ADP_TOKEN_BUDGET"))
    sandbox: Literal["warm", "bwrap"] = Field("warm", validation_alias=_env("ADP_SANDBOX"))
    """warm: a pool of resident sandboxes that fork per execution; bwrap: one launch per execution."""
    sandbox_uid_base: int = Field(61000, ge=1000, validation_alias=_env("ADP_SANDBOX_UID_BASE"))
    sandbox_max_memory_mb: int = Field(1024, ge=64, le=65536, validation_alias=_env("ADP_SANDBOX_MAX_MEMORY_MB"))
    """The most memory one execution may have (its tmpfs included): larger task lines are rejected at
    ingest, and what reaches a sandbox another way is clamped to it."""
    sandbox_memory_budget_mb: int | None = Field(None, ge=64, validation_alias=_env("ADP_SANDBOX_MEMORY_BUDGET_MB"))
    """The memory a process's sandbox pool may hold at once (default: half the RAM, or of the
    container's limit); an execution waits for room rather than overcommit."""
    llm_tool_calling: bool = Field(True, validation_alias=_env("ADP_LLM_TOOL_CALLING"))
    """Off for models without native tool calling: tools go in the prompt, answers are JSON."""
    llm_max_concurrency: int = Field(16, ge=1, validation_alias=_env("ADP_LLM_MAX_CONCURRENCY"))
    llm_max_attempts: int = Field(5, ge=1, validation_alias=_env("ADP_LLM_MAX_ATTEMPTS"))
    llm_backoff_base: float = Field(0.5, ge=0, validation_alias=_env("ADP_LLM_BACKOFF_BASE"))
    mock_llm_url: str | None = Field(None, validation_alias=_env("ADP_MOCK_LLM_URL"))
    """The mock policy talks to this server instead of starting its own."""
    mock_latency: float = Field(0.0, ge=0, validation_alias=_env("ADP_MOCK_LATENCY"))
    essence_extractor: Literal["structural", "llm"] = Field(
        "structural", validation_alias=_env("ADP_ESSENCE_EXTRACTOR")
    )
    """structural: essences from the recorded tool calls alone; llm: the configured model adds
    domain, a general query, complexity and the success pattern (structural where it fails)."""
    synth_max_generation: int = Field(3, ge=0, le=1000, validation_alias=_env("ADP_SYNTH_MAX_GENERATION"))
    """Synthesized tasks are made up to this generation (0: synthesis off)."""
    synth_candidates: int = Field(16, ge=0, validation_alias=_env("ADP_SYNTH_CANDIDATES"))
    """Candidates made from one batch's essences (before the filters)."""
    synth_daily_tasks: int = Field(500, ge=0, validation_alias=_env("ADP_SYNTH_DAILY_TASKS"))
    """New tasks accepted per UTC day, across all batches."""
    synth_daily_tokens: int = Field(2_000_000, ge=0, validation_alias=_env("ADP_SYNTH_DAILY_TOKENS"))
    """LLM tokens the mutation operators may spend per UTC day, across all batches."""
    synth_dedup_threshold: float = Field(0.7, gt=0, le=1, validation_alias=_env("ADP_SYNTH_DEDUP_THRESHOLD"))
    """Estimated Jaccard similarity (word pairs) at or above which a candidate is a near duplicate."""
    synth_min_success: float = Field(0.8, ge=0, le=1, validation_alias=_env("ADP_SYNTH_MIN_SUCCESS"))
    """The check on synthesized tasks: their verified success rate per generation is at least this."""
    export_format: ExportFormat = Field("openai", validation_alias=_env("ADP_EXPORT_FORMAT"))
    """The training_dataset asset's record format (`adp export --format` for one-off files)."""
    export_val_fraction: float = Field(0.05, ge=0, lt=1, validation_alias=_env("ADP_EXPORT_VAL_FRACTION"))
    """Share of task ids (by hash) the training_dataset asset puts in split=validation."""
    query_memory_mb: int = Field(2048, ge=64, validation_alias=_env("ADP_QUERY_MEMORY_MB"))
    """DuckDB's memory for one `adp query` (the export's `--where` read takes at most 256 MB of it);
    beyond it DuckDB spills to disk."""
    query_temp_mb: int = Field(4096, ge=0, validation_alias=_env("ADP_QUERY_TEMP_MB"))
    """Disk DuckDB may spill to for one `adp query` or export (0: no spilling)."""
    query_threads: int = Field(4, ge=1, validation_alias=_env("ADP_QUERY_THREADS"))
    """DuckDB threads for one `adp query` or export."""
    query_timeout_seconds: float = Field(300.0, gt=0, validation_alias=_env("ADP_QUERY_TIMEOUT_SECONDS"))
    """An `adp query` still running after this long is interrupted."""
    nightly_cron: str = Field("0 2 * * *", validation_alias=_env("ADP_NIGHTLY_CRON"))
    """When the nightly job (dbt build, training-set export) runs; ``off`` leaves the schedule stopped."""
    timezone: str = Field("UTC", validation_alias=_env("ADP_TIMEZONE"))
    """The timezone of ADP_NIGHTLY_CRON (an IANA name such as Europe/Berlin)."""
    dbt_project_dir: Path | None = Field(None, validation_alias=_env("ADP_DBT_PROJECT_DIR"))
    """The dbt quality project (default: the repository's dbt_quality/; the Dagster image sets it)."""
    mode: Literal["local", "redis"] = Field("local", validation_alias=_env("ADP_MODE"))
    """local: run a batch in this process; redis: enqueue it for `adp worker` processes."""
    redis_deadline: float = Field(3600.0, gt=0, validation_alias=_env("ADP_REDIS_DEADLINE"))
    """Seconds a redis-mode run waits for all results before failing."""
    reclaim_grace: float = Field(30.0, ge=0, validation_alias=_env("ADP_RECLAIM_GRACE"))
    """A task's message is reclaimed from a silent worker after its timeout plus this."""
    max_deliveries: int = Field(3, ge=1, validation_alias=_env("ADP_MAX_DELIVERIES"))
    """Deliveries after which a task ends as a dead-lettered system_error."""
    metrics_host: str = Field("127.0.0.1", validation_alias=_env("ADP_METRICS_HOST"))
    metrics_port: int = Field(8001, ge=0, le=65535, validation_alias=_env("METRICS_PORT"))
    dagster_home_override: Path | None = Field(None, validation_alias=_env("DAGSTER_HOME"))
    view_url: str | None = Field(None, validation_alias=_env("ADP_VIEW_URL"))
    """`adp view`'s base URL as the operator's browser reaches it: Dagster's metadata links to its
    pages when set (`adp dev` sets it for the viewer it starts)."""
    llm_base_url: str | None = Field(None, validation_alias=_env("ADP_LLM_BASE_URL"))
    """An explicit OpenAI-compatible endpoint for the llm policy (with ADP_LLM_MODEL)."""
    llm_model: str | None = Field(None, validation_alias=_env("ADP_LLM_MODEL"))
    llm_api_key: SecretStr | None = Field(None, validation_alias=_env("ADP_LLM_API_KEY"))
    gemini_api_key: SecretStr | None = Field(None, validation_alias=_env("GEMINI_API_KEY"))
    gemini_api_url: str | None = Field(None, validation_alias=_env("GEMINI_API_URL"))
    deepseek_api_key: SecretStr | None = Field(None, validation_alias=_env("DEEPSEEK_API_KEY"))
    deepseek_api_url: str | None = Field(None, validation_alias=_env("DEEPSEEK_API_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    openai_api_base: str | None = Field(None, validation_alias=_env("OPENAI_API_BASE"))
    vllm_url: str | None = Field(None, validation_alias=_env("VLLM_URL"))
    vllm_model: str | None = Field(None, validation_alias=_env("VLLM_MODEL"))

    @field_validator("view_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # Checked here, at the edge: a link Dagster shows must not be javascript: or a bare path.
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ValueError(f"must be http(s)://host[:port][/path], not {value!r}")
        return value

    @property
    def output_dir(self) -> Path:
        """ADP_OUTPUT_DIR, by default ``<data_dir>/output``."""
        return self.output_dir_override or self.data_dir / "output"

    @property
    def tasks_dir(self) -> Path:
        """TASKS_DIR, by default ``<data_dir>/inbox``: where synthesis writes and the sensor looks."""
        return self.tasks_dir_override or self.data_dir / "inbox"

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME, by default ``<data_dir>/dagster``: the instance `adp run` and `adp dev` share."""
        return (self.dagster_home_override or self.data_dir / "dagster").absolute()

    @property
    def llm_cache(self) -> FileResponseCache | None:
        """The LLM response cache (``<data_dir>/llm_cache``), or None when ENABLE_CACHE is off."""
        from runtimes.llm import FileResponseCache

        return FileResponseCache(self.data_dir / "llm_cache", self.cache_ttl) if self.enable_cache else None

    @property
    def sandbox_config(self) -> SandboxConfig:
        from runtimes.sandbox import SandboxConfig

        return SandboxConfig(
            kind=self.sandbox,
            uid_base=self.sandbox_uid_base,
            max_memory_mb=self.sandbox_max_memory_mb,
            memory_budget_mb=self.sandbox_memory_budget_mb,
        )

    @property
    def browser_config(self) -> BrowserConfig:
        from runtimes.web import BrowserConfig

        return BrowserConfig(
            max_contexts=self.max_concurrent,
            chromium_path=self.chromium_path,
            action_timeout=self.browser_action_timeout,
            memory_limit_mb=self.browser_memory_mb,
            screenshots=self.screenshots,
            screenshot_max_bytes=self.screenshot_max_bytes,
            screenshot_scale=self.screenshot_scale,
        )

    @property
    def llm_config(self) -> LLMConfig:
        from runtimes.llm import LLMConfig

        return LLMConfig(
            base_url=self.llm_base_url,
            model=self.llm_model,
            api_key=self.llm_api_key,
            gemini_api_key=self.gemini_api_key,
            gemini_api_url=self.gemini_api_url,
            deepseek_api_key=self.deepseek_api_key,
            deepseek_api_url=self.deepseek_api_url,
            openai_api_key=self.openai_api_key,
            openai_api_base=self.openai_api_base,
            vllm_url=self.vllm_url,
            vllm_model=self.vllm_model,
            max_concurrency=self.llm_max_concurrency,
            max_attempts=self.llm_max_attempts,
            backoff_base=self.llm_backoff_base,
        )

    @property
    def policy_config(self) -> PolicyConfig:
        """What opens the ADP_POLICY policy (or any other by name): endpoints, cache, mock server."""
        from runtimes.llm import PolicyConfig

        llm, cache, native_tools = self.llm_config, self.llm_cache, self.llm_tool_calling
        return PolicyConfig(llm, cache, native_tools, mock_url=self.mock_llm_url, mock_latency=self.mock_latency)
