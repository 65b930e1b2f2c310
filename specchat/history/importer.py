"""The JSON-lines conversations of earlier versions, imported into the store once.

Each file under conversations/ (the chat's autosave before the store existed)
becomes one conversation whose turns name the file as their round trace, read
through the same Transcript rules as `--resume` (so a torn last line, an answer
cut short, an event with no prompt are read as they always were). Each file is
imported in one transaction, with the file's name recorded, and the whole import
in one more: two processes starting at once import it once, a crash mid-import
leaves nothing half done. The files stay where they are (they are the traces);
one that cannot be read is left alone and named in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from specchat.tui.persist import TraceError, conversations_dir, read_records
from specchat.tui.transcript import Prompt, Transcript

from .recorder import TurnRecorder
from .store import HistoryError, HistoryStore

MARK = "jsonl_imported"


@dataclass
class ImportReport:
    imported: int = 0
    unreadable: list[str] = field(default_factory=list)


def import_once(store: HistoryStore, base: Path | None = None) -> ImportReport:
    """Import the old conversations unless this store has done so already."""
    report = ImportReport()
    if store.get_meta(MARK):
        return report
    folder = conversations_dir(base)
    files = sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name)) if folder.is_dir() else []
    with store.transaction():
        if store.get_meta(MARK):  # another process did it while this one waited
            return report
        for path in files:
            if store.known_trace(str(path)):
                continue  # a conversation the store already names
            store.db.execute("SAVEPOINT one_file")
            try:
                if import_file(store, path):
                    report.imported += 1
            except TraceError as exc:
                store.db.execute("ROLLBACK TO one_file")
                report.unreadable.append(str(exc))
            store.db.execute("RELEASE one_file")
        store.set_meta(MARK, "1")
    return report


def import_file(store: HistoryStore, path: Path) -> bool:
    """One file as one conversation (in the caller's transaction); False when it holds none."""
    records = list(read_records(path))  # TraceError before anything is written
    if not records:
        return False
    mtime = path.stat().st_mtime
    transcript = Transcript()
    cid = store.new_conversation("imported", imported_from=str(path), created=mtime)
    errors: list[str] = []
    recorder = TurnRecorder(store, source="imported", conversation_id=cid, trace=path, on_error=errors.append)
    for record in records:
        before = len(transcript.answers)
        transcript.apply(record)
        if len(transcript.answers) > before and not isinstance(record, Prompt):
            # The file opened a turn without a prompt record (a bare trace): so does the store.
            recorder.append(Prompt(transcript.answers[-1].user_text))
        recorder.append(record)
    recorder.close()
    if errors:
        raise HistoryError(errors[0])
    store.set_times(cid, mtime, mtime)
    return True
