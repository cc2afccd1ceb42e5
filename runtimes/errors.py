"""adp's exception tree. Each class maps to one ErrorType, so failures are classified by type,
never by searching for words in a message."""

from __future__ import annotations

from runtimes.protocol import ErrorType


class AdpError(Exception):
    """Base of every error adp raises on purpose."""

    error_type: ErrorType = ErrorType.SYSTEM_ERROR


class TaskFileError(AdpError):
    """A task file cannot be read at all (its lines' problems are rejects, not errors)."""


class ConfigError(AdpError):
    """Configuration is missing or contradictory; the message says which setting to change."""


class BrowserError(AdpError):
    """The browser could not be started, or died under a task."""

    error_type = ErrorType.BROWSER_ERROR
