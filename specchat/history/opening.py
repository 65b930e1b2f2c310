"""Where the history lives and how every front end opens it (the old files imported once)."""

from __future__ import annotations

from pathlib import Path

from specchat.tui.persist import data_dir

from .importer import ImportReport, import_once
from .store import HistoryStore

FILE_NAME = "history.db"


def history_path(base: Path | None = None) -> Path:
    """history.db in the user's data directory (or `base`, the chat's data_dir)."""
    return (base or data_dir()) / FILE_NAME


def open_history(base: Path | None = None) -> tuple[HistoryStore, ImportReport]:
    """The store, with the JSON-lines conversations of earlier versions imported
    (once). Raises HistoryError with the one line to show."""
    store = HistoryStore.open(history_path(base))
    try:
        report = import_once(store, base)
    except BaseException:
        store.close()
        raise
    return store, report
