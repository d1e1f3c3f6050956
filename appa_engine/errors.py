"""User-facing errors.

Every error a user can cause (a bad file, a missing variable, a wrong config key) is raised as an
:class:`AppaError` subclass whose message says *what* is wrong and whose ``hint`` says *how to fix
it*. The CLI prints both without a traceback; the app shows them next to the control that caused
them. Programming errors stay ordinary Python exceptions.
"""

from __future__ import annotations


class AppaError(Exception):
    """Base class of the errors a user can fix.

    Arguments:
        message: What is wrong, in one sentence.
        hint: How to fix it (optional), in one sentence.
    """

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHint: {hint}")


class DataError(AppaError, ValueError):
    """A data source is missing, malformed or does not hold what was asked for."""


class ConfigError(AppaError, ValueError):
    """A configuration, scenario or option is invalid (unknown key, wrong type, out of range)."""


class CheckpointError(AppaError, ValueError):
    """A checkpoint or model package is corrupted, truncated or does not match."""


class ObservationError(AppaError, ValueError):
    """An observation or observer is invalid (coordinates, errors, channels, times)."""


class MissingExtraError(AppaError, ImportError):
    """An optional dependency is missing."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the optional package '{package}', which is not installed.",
            hint=f"install the '{extra}' extra: pip install 'appa-studio[{extra}]'",
        )


def require(module: str, *, extra: str, purpose: str):
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra."""

    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(module.split(".")[0], extra, purpose) from e
