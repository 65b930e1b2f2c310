"""The history store's errors: sqlite3's, turned into one line naming the file and the way out."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class HistoryError(Exception):
    """The history database cannot be used; the message is one line for the user."""


def _busy_s() -> float:
    from . import store

    return store.BUSY_MS / 1000


class sqlite_errors:
    """sqlite3's errors as HistoryError, one line naming the file and the way out."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is None or not issubclass(kind, sqlite3.Error):
            return False
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise HistoryError(f"the history database {self.path} is locked by another process (waited "
                               f"{_busy_s():g} s): close the other specchat, or use --no-log") from None
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text
                                                       or "corrupt" in text):
            raise HistoryError(f"the history database {self.path} is damaged ({text}): move it away and "
                               "specchat starts a new one (it is never overwritten)") from None
        raise HistoryError(f"history database {self.path}: {text}") from None
