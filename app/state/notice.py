"""A message shown next to the control that caused it."""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["Notice", "ok", "error", "info", "warn"]

Level = Literal["success", "info", "warning", "danger"]


class Notice(NamedTuple):
    """One message: ``level`` (the colour of the alert) and the ``text`` to show."""

    level: Level
    text: str

    @property
    def is_error(self) -> bool:
        return self.level == "danger"


def ok(text: str) -> Notice:
    return Notice("success", text)


def info(text: str) -> Notice:
    return Notice("info", text)


def warn(text: str) -> Notice:
    return Notice("warning", text)


def error(exc_or_text) -> Notice:
    """A red notice from a text or an :class:`~appa_engine.errors.AppaError` (message + hint)."""

    if isinstance(exc_or_text, str):
        return Notice("danger", exc_or_text)
    message = getattr(exc_or_text, "message", None) or str(exc_or_text)
    hint = getattr(exc_or_text, "hint", None)
    return Notice("danger", message + (f" Hint: {hint}" if hint else ""))
