"""adp's exception tree, all of it: every error adp raises on purpose is an :class:`AdpError`,
and each class maps to one :class:`ErrorType`, so a failure is classified by its type, never by
searching for words in a message.

Errors that end a task (and so name its trajectory's ``error_type``) are the ones the runner
meets; the others (a bad task file, a bad export request, a broken catalog) stop a command or
an asset, and map to ``system_error`` for completeness.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtimes.core._protocol import LLMAttempt


class ErrorType(StrEnum):
    """How a task failed: a trajectory's and a step's ``error_type`` (DESIGN.md §9)."""

    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    BROWSER_ERROR = "browser_error"
    LLM_ERROR = "llm_error"
    SYSTEM_ERROR = "system_error"


class AdpError(Exception):
    """Base of every error adp raises on purpose."""

    error_type: ErrorType = ErrorType.SYSTEM_ERROR
    system_failure: bool = True
    """When it ends a task: adp's machinery failed the task (no model answered, no browser, no
    sandbox), not the agent's work; the trajectory's ``system_failure``. A class whose cause is
    the task itself says False."""


# --- errors that end a task ---------------------------------------------------------------


class LLMError(AdpError):
    """The model could not be asked (after retries), or answered with something unusable."""

    error_type = ErrorType.LLM_ERROR

    def __init__(self, message: str, attempts: list[LLMAttempt] | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts or []


class OracleError(AdpError):
    """The oracle cannot replay the task: it carries no reference calls, or they never call
    complete_task. A defect of the task's data, not of a model."""

    system_failure = False  # the task's data is at fault, not adp's machinery


class BrowserError(AdpError):
    """The browser could not be started, or died under a task."""

    error_type = ErrorType.BROWSER_ERROR


class StartPageError(BrowserError):
    """The browser works, but the task's ``start_url`` did not load (a host that refuses or does
    not resolve, a page that never finished loading, a redirect off the allowlist): a defect of
    the task's data, not of adp's machinery."""

    system_failure = False  # the task's page is at fault; `adp doctor` would find nothing to fix


class SandboxError(AdpError):
    """The sandbox itself failed (its runner did not start), as opposed to the code it ran."""


# --- errors of input and configuration ------------------------------------------------------


class TaskFileError(AdpError):
    """A task file cannot be read at all (its lines' problems are rejects, not errors)."""


class ConfigError(AdpError):
    """Configuration is missing or contradictory; the message says which setting to change."""


class InvalidURLError(AdpError, ValueError):
    """A URL or rule that cannot be parsed into scheme, host, port and path."""


class MalformedMessageError(AdpError, ValueError):
    """A stream message that is not an adp task message; the text says what is wrong."""


class DeadlineError(AdpError):
    """Results did not all arrive in time; the message says how many and where to look."""


# --- errors of the pipeline's own stores and products -----------------------------------------


class CatalogError(AdpError):
    """The DuckDB catalog cannot be opened; the message says why and what to do."""


class DbtProjectError(AdpError):
    """The dbt project is missing or cannot be parsed; the message says why."""


class ExportError(AdpError):
    """The export cannot be written as asked; the message says why."""


class RefusedError(AdpError):
    """A request that would reach what a reader may not: a query or condition that is not one
    read of the lake, an export onto adp's own files. The message names what and why."""


class QueryLimitError(AdpError):
    """A person's query ran past the time, memory or spill space it is given; the message
    names the setting to raise."""


class BrokenMessagesError(AdpError, ValueError):
    """A trajectory's messages are not a sequence a trainer can learn from; the message says why."""


# --- errors of synthesis ------------------------------------------------------------------------


class StructuredAnswerError(AdpError, ValueError):
    """The model gave no valid structured answer within its attempts; the message has the last problem."""

    error_type = ErrorType.LLM_ERROR


class EssenceExtractionError(AdpError, ValueError):
    """The model gave no valid essence within its attempts; the message has the last problem."""

    error_type = ErrorType.LLM_ERROR


class CandidateError(AdpError, ValueError):
    """A synthesized candidate is not a valid task; ``stage`` says where it failed (for synthesis_rejects)."""

    def __init__(self, stage: str, reason: str, description: str | None = None) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
        self.description = description  # the task's text, when the model gave one


def _named_publicly(error: type[AdpError]) -> None:
    # Tracebacks and Dagster's failure messages name a class by its module: name the public one.
    error.__module__ = "runtimes.core"
    for subclass in error.__subclasses__():
        _named_publicly(subclass)


_named_publicly(AdpError)
