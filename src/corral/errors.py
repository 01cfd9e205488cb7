"""User-facing errors.

Every error a user can cause derives from :class:`CorralError`: it carries one clear message
(what was wrong), an optional hint (what to do), the HTTP status a server answers with and the
exit code the CLI ends with. Transports render these; nothing else reaches a user as a trace.
"""

from __future__ import annotations


class CorralError(Exception):
    """Base class: a problem the user can understand and act on."""

    http_status: int = 400
    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class BadReferenceError(CorralError):
    """A model reference is malformed or ambiguous."""

    http_status = 400
    exit_code = 2


class ModelNotFoundError(CorralError):
    """No registered model, alias or path matches a name."""

    http_status = 404


class UnsafeModelError(CorralError):
    """A model needs pickle loading or remote code and the user did not opt in."""

    http_status = 403


class InvalidModelFileError(CorralError):
    """A model file is malformed, truncated, or claims impossible sizes."""

    http_status = 422


class MissingDependencyError(CorralError):
    """The engine for a model needs a Python package that is not installed."""

    http_status = 503


class UnsupportedTaskError(CorralError):
    """The model (or its engine) cannot serve the requested task."""

    http_status = 400


class DownloadError(CorralError):
    """A download failed: no network, unknown repo, or a file that fails its checksum."""

    http_status = 502


class OfflineError(DownloadError):
    """The hub cannot be reached (no network, or offline mode)."""

    http_status = 503


class InsufficientStorageError(DownloadError):
    """A download would leave less free disk than the configured reserve; refused before the first byte."""

    http_status = 507


class UsageError(CorralError):
    """A command-line or request parameter is invalid."""

    http_status = 422
    exit_code = 2


class ParameterError(UsageError):
    """A request field out of the model's range (``param`` names it), 400 as OpenAI and vLLM answer."""

    http_status = 400

    def __init__(self, param: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.param = param


class ConfigError(CorralError):
    """A setting with a bad value: in a flag, an environment variable or the config file."""

    http_status = 422
    exit_code = 2


class ConflictError(CorralError):
    """A name is already taken by something else."""

    http_status = 409


class ContextLengthError(CorralError):
    """The prompt does not fit the model's context window."""

    http_status = 400


class InsufficientMemoryError(CorralError):
    """A model cannot fit the memory budget even with every other model unloaded."""

    http_status = 507


class StalledError(CorralError):
    """A model produced nothing for longer than the stall timeout (``--stall-timeout``)."""

    http_status = 504


class BusyError(CorralError):
    """The server cannot take this request now (queue full, loading, draining); retry later."""

    http_status = 503

    def __init__(self, message: str, hint: str | None = None, *, retry_after: int = 1,
                 status: int = 503) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after
        self.http_status = status
