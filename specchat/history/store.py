"""The history store: every conversation and one-shot answer in one SQLite file.

    store = HistoryStore.open(path)        # HistoryError: locked, damaged, newer schema
    cid = store.new_conversation("chat", system_prompt=None)
    turn = store.begin_turn(cid, "Why is the sky blue?", trace=..., trace_index=0)
    store.update_answer(turn, "Because", status="interrupted")   # as the answer streams
    store.finish_turn(turn, TurnFigures(...))                       # when it ends
    store.search("sky blue")  /  store.conversations()  /  store.turns(cid)

One row per turn holds the user's message, the answer, the settings the turn ran
with and its figures; round traces stay files (the chat's JSON-lines autosave),
named by the turn that made them (`trace`, and `trace_index`, the answer's place in
that file). Python's own sqlite3, in WAL mode (readers never block the writer, a
committed write survives a kill -9), FTS5 for search where the build has it, LIKE
where not. A turn is written as "interrupted" when it begins and its text as it
streams, so a process killed mid-answer leaves the partial answer marked so; it
gets its real status when it ends. Two processes may write at once: each write is
one short transaction, and a busy database is waited on (`BUSY_MS`).

A database this code cannot use (locked past the wait, not SQLite, damaged, or
made by a newer specchat) raises HistoryError with one line saying what to do; it
is never rewritten.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HistoryError, sqlite_errors as _errors

__all__ = ["HistoryError", "HistoryStore", "Conversation", "Turn", "fts5_available"]
SCHEMA_VERSION = 1
BUSY_MS = 5000
APPLICATION_ID = 0x53504348  # "SPCH": marks the file as specchat's

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    system_prompt TEXT,
    source TEXT NOT NULL,               -- chat | oneshot | imported
    imported_from TEXT UNIQUE           -- the JSON-lines file an import read
);
CREATE TABLE turns (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,               -- 1, 2, ... within the conversation
    created REAL NOT NULL,
    prompt TEXT NOT NULL,
    answer TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,               -- interrupted | complete | length | stopped | error
    error TEXT,
    target TEXT, drafter TEXT, device TEXT, weights TEXT, kv_cache TEXT, k TEXT,
    temperature REAL,
    tokens INTEGER, rounds INTEGER, tokens_per_s REAL, acceptance REAL, tokens_per_round REAL,
    speedup REAL, speedup_kind TEXT,    -- estimate | measured
    trace TEXT, trace_index INTEGER,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX turns_trace ON turns(trace);
CREATE INDEX conversations_updated ON conversations(updated);
"""
_FTS = """
CREATE VIRTUAL TABLE turns_fts USING fts5(prompt, answer, content='turns', content_rowid='id');
CREATE TRIGGER turns_ai AFTER INSERT ON turns BEGIN
    INSERT INTO turns_fts(rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
END;
CREATE TRIGGER turns_ad AFTER DELETE ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, prompt, answer) VALUES ('delete', old.id, old.prompt, old.answer);
END;
CREATE TRIGGER turns_au AFTER UPDATE OF prompt, answer ON turns BEGIN
    INSERT INTO turns_fts(turns_fts, rowid, prompt, answer) VALUES ('delete', old.id, old.prompt, old.answer);
    INSERT INTO turns_fts(rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
END;
"""
FIGURES = ("target", "drafter", "device", "weights", "kv_cache", "k", "temperature", "tokens", "rounds",
           "tokens_per_s", "acceptance", "tokens_per_round", "speedup", "speedup_kind", "error")


def fts5_available() -> bool:
    try:
        sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    return True


@dataclass
class Conversation:
    id: int
    created: float
    updated: float
    title: str
    system_prompt: str | None
    source: str
    turns: int = 0
    models: str = ""  # "target + drafter" of its last turn
    snippet: str = ""  # for a search: where it matched


@dataclass
class Turn:
    id: int
    conversation_id: int
    seq: int
    created: float
    prompt: str
    answer: str
    status: str
    trace: str | None = None
    trace_index: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59] + "…"


def fts_query(words: str) -> str:
    """Each word as a quoted FTS5 prefix term (so quotes and operators in what a
    user types are text, never syntax); all must match."""
    return " ".join('"' + w.replace('"', '""') + '"*' for w in words.split())


class HistoryStore:
    def __init__(self, path: Path, db: sqlite3.Connection, fts: bool) -> None:
        self.path = path
        self.db = db
        self.fts = fts

    # ---- opening ---------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> "HistoryStore":
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open the history database {path}: {exc}") from None
        try:
            with _errors(path):
                fts = cls._prepare(db, path)
        except BaseException:
            db.close()
            raise
        return cls(path, db, fts)

    @staticmethod
    def _prepare(db: sqlite3.Connection, path: Path) -> bool:
        db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN IMMEDIATE")  # two processes creating it at once: one does, the other waits
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables == 0:
                fts = fts5_available()
                # One statement at a time (executescript would commit the open transaction).
                for statement in _split_sql(_SCHEMA + (_FTS if fts else "")):
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('fts', ?)", ("fts5" if fts else "like",))
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            else:
                db.execute("COMMIT")
                if app_id != APPLICATION_ID:
                    raise HistoryError(f"{path} is not a specchat history database: move it away "
                                       "and specchat starts a new one")
                if version > SCHEMA_VERSION:
                    raise HistoryError(f"{path} was written by a newer specchat (history schema {version}, "
                                       f"this one reads {SCHEMA_VERSION}): upgrade specchat, or move the "
                                       "file away to start a new history")
                row = db.execute("SELECT value FROM meta WHERE key = 'fts'").fetchone()
                fts = bool(row and row[0] == "fts5")
                if fts and not fts5_available():
                    raise HistoryError(f"{path} was made with SQLite's FTS5, which this Python's sqlite3 "
                                       "lacks: use a Python whose SQLite has FTS5")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # in WAL: a commit survives a crashed process
        return fts

    def close(self) -> None:
        self.db.close()

    # ---- writing ---------------------------------------------------------------

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with _errors(self.path):
            return self.db.execute(sql, args)

    def new_conversation(self, source: str, system_prompt: str | None = None, *, title: str = "",
                         created: float | None = None, imported_from: str | None = None) -> int:
        now = time.time() if created is None else created
        return self._write(
            "INSERT INTO conversations (created, updated, title, system_prompt, source, imported_from) "
            "VALUES (?, ?, ?, ?, ?, ?)", (now, now, title, system_prompt, source, imported_from)).lastrowid

    def set_system_prompt(self, conversation_id: int, text: str | None) -> None:
        self._write("UPDATE conversations SET system_prompt = ? WHERE id = ?", (text, conversation_id))

    def begin_turn(self, conversation_id: int, prompt: str, *, trace: str | None = None,
                   trace_index: int | None = None, created: float | None = None) -> int:
        """The turn's row, status "interrupted" until finish_turn: what a killed
        process leaves. Its number in the conversation is taken in the same
        transaction, so two writers never share one."""
        now = time.time() if created is None else created
        own = not self.db.in_transaction  # else part of the caller's (an import)
        with _errors(self.path):
            if own:
                self.db.execute("BEGIN IMMEDIATE")
            try:
                seq = self.db.execute("SELECT coalesce(max(seq), 0) + 1 FROM turns WHERE conversation_id = ?",
                                      (conversation_id,)).fetchone()[0]
                turn = self.db.execute(
                    "INSERT INTO turns (conversation_id, seq, created, prompt, status, trace, trace_index) "
                    "VALUES (?, ?, ?, ?, 'interrupted', ?, ?)",
                    (conversation_id, seq, now, prompt, trace, trace_index)).lastrowid
                self.db.execute("UPDATE conversations SET updated = ?, title = CASE title WHEN '' THEN ? "
                                "ELSE title END WHERE id = ?", (now, _title(prompt), conversation_id))
                if own:
                    self.db.execute("COMMIT")
            except BaseException:
                if own and self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return turn

    def update_answer(self, turn_id: int, text: str, **figures: Any) -> None:
        """The answer so far (and any settings known), still "interrupted"."""
        self._set(turn_id, {"answer": text, **figures})

    def finish_turn(self, turn_id: int, text: str, status: str, **figures: Any) -> None:
        self._set(turn_id, {"answer": text, "status": status, **figures})

    def _set(self, turn_id: int, values: dict[str, Any]) -> None:
        unknown = set(values) - {"answer", "status", *FIGURES}
        if unknown:
            raise ValueError(f"unknown turn fields: {sorted(unknown)}")
        columns = ", ".join(f"{name} = ?" for name in values)
        self._write(f"UPDATE turns SET {columns} WHERE id = ?", (*values.values(), turn_id))

    def delete(self, conversation_id: int) -> list[str]:
        """Delete a conversation and its turns; returns the trace files no other turn names."""
        with _errors(self.path):
            traces = [r[0] for r in self.db.execute(
                "SELECT DISTINCT trace FROM turns WHERE conversation_id = ? AND trace IS NOT NULL",
                (conversation_id,))]
            self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return [t for t in traces
                    if self.db.execute("SELECT 1 FROM turns WHERE trace = ? LIMIT 1", (t,)).fetchone() is None]

    # ---- reading ---------------------------------------------------------------

    def _rows(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with _errors(self.path):
            cursor = self.db.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    _LISTING = ("SELECT c.*, (SELECT count(*) FROM turns t WHERE t.conversation_id = c.id) AS turns, "
                "(SELECT coalesce(t.target, '') || CASE WHEN t.drafter IS NULL THEN '' ELSE ' + ' || t.drafter END "
                " FROM turns t WHERE t.conversation_id = c.id ORDER BY t.seq DESC LIMIT 1) AS models "
                "FROM conversations c")

    @staticmethod
    def _conversation(row: dict, snippet: str = "") -> Conversation:
        return Conversation(id=row["id"], created=row["created"], updated=row["updated"], title=row["title"],
                            system_prompt=row["system_prompt"], source=row["source"], turns=row["turns"] or 0,
                            models=row["models"] or "", snippet=snippet)

    def conversations(self, limit: int = 20) -> list[Conversation]:
        """The most recently written first."""
        rows = self._rows(f"{self._LISTING} ORDER BY c.updated DESC, c.id DESC LIMIT ?", (limit,))
        return [self._conversation(r) for r in rows]

    def conversation(self, conversation_id: int) -> Conversation | None:
        rows = self._rows(f"{self._LISTING} WHERE c.id = ?", (conversation_id,))
        return self._conversation(rows[0]) if rows else None

    def latest(self) -> Conversation | None:
        found = self.conversations(limit=1)
        return found[0] if found else None

    def turns(self, conversation_id: int) -> list[Turn]:
        rows = self._rows("SELECT * FROM turns WHERE conversation_id = ? ORDER BY seq", (conversation_id,))
        return [Turn(id=r["id"], conversation_id=r["conversation_id"], seq=r["seq"], created=r["created"],
                     prompt=r["prompt"], answer=r["answer"], status=r["status"], trace=r["trace"],
                     trace_index=r["trace_index"], figures={k: r[k] for k in FIGURES if r[k] is not None})
                for r in rows]

    def search(self, words: str, limit: int = 20) -> list[Conversation]:
        """Conversations with a turn holding every word (as a word prefix with FTS5,
        as a substring without), most recently written first, each with a snippet."""
        if not words.split():
            return self.conversations(limit)
        if self.fts:
            hits = self._rows("SELECT t.conversation_id AS cid, snippet(turns_fts, -1, '[', ']', '…', 8) AS snippet "
                              "FROM turns_fts JOIN turns t ON t.id = turns_fts.rowid "
                              "WHERE turns_fts MATCH ? ORDER BY t.id DESC", (fts_query(words),))
        else:
            terms = [f"%{_like_escape(w)}%" for w in words.split()]
            where = " AND ".join("(prompt LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')" for _ in terms)
            args = tuple(t for term in terms for t in (term, term))
            hits = self._rows(f"SELECT conversation_id AS cid, CASE WHEN prompt LIKE ? ESCAPE '\\' THEN prompt "
                              f"ELSE answer END AS snippet FROM turns WHERE {where} ORDER BY id DESC",
                              (terms[0], *args))
        if not hits:
            return []
        snippets: dict[int, str] = {}
        for hit in hits:
            text = " ".join(hit["snippet"].split())
            snippets.setdefault(hit["cid"], text if self.fts else _around(text, words.split()[0]))
        marks = ",".join("?" * len(snippets))
        rows = self._rows(f"{self._LISTING} WHERE c.id IN ({marks}) ORDER BY c.updated DESC, c.id DESC LIMIT ?",
                          (*snippets, limit))
        return [self._conversation(r, snippets[r["id"]]) for r in rows]

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_times(self, conversation_id: int, created: float, updated: float) -> None:
        self._write("UPDATE conversations SET created = ?, updated = ? WHERE id = ?",
                    (created, updated, conversation_id))

    def known_trace(self, path: str) -> bool:
        """A file some conversation was imported from, or a turn's round trace."""
        return bool(self._rows("SELECT 1 FROM conversations WHERE imported_from = ? UNION ALL "
                               "SELECT 1 FROM turns WHERE trace = ? LIMIT 1", (path, path)))

    def get_meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def transaction(self) -> "_Transaction":
        return _Transaction(self)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): several writes as one."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    def __enter__(self) -> HistoryStore:
        self.store._write("BEGIN IMMEDIATE")
        return self.store

    def __exit__(self, kind, exc, tb) -> None:
        self.store._write("COMMIT" if kind is None else "ROLLBACK")


def _around(text: str, word: str, width: int = 70) -> str:
    """A piece of `text` around the first `word` (case-insensitive), as FTS5's snippet()."""
    at = max(0, text.lower().find(word.lower()))
    start = max(0, at - width // 3)
    piece = text[start:start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _split_sql(script: str) -> list[str]:
    """Statements of a script whose triggers hold `;` inside BEGIN ... END."""
    out, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            current = []
    return out
