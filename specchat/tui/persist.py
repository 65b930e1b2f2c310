"""Records on disk: the autosaved conversation and trace files, as JSON lines.

One record per line: engine events exactly as `events.to_json` writes them (so a
trace from `--trace` is a valid file here), plus the app's `prompt` and
`system_prompt` records. Each line is flushed as it is written, so a crash loses
at most the line being written; a torn last line is skipped on reading.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Iterator

import platformdirs

from specchat.engine.loop.events import event_from_dict, to_json

from .transcript import Prompt, Record, SystemPrompt, Transcript


class TraceError(Exception):
    """A trace or conversation file that cannot be read; the message says why."""


def record_to_json(record: Record) -> str:
    if isinstance(record, Prompt):
        return json.dumps({"type": "prompt", "text": record.text}, ensure_ascii=False)
    if isinstance(record, SystemPrompt):
        return json.dumps({"type": "system_prompt", "text": record.text}, ensure_ascii=False)
    return to_json(record)


def record_from_dict(data: dict) -> Record:
    kind = data.get("type")
    if kind == "prompt":
        return Prompt(str(data.get("text", "")))
    if kind == "system_prompt":
        return SystemPrompt(data.get("text"))
    return event_from_dict(data)


def read_records(path: Path) -> Iterator[Record]:
    """Records of a file. A bad line raises TraceError naming it, except a torn
    last line (the process died while writing it), which is skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise TraceError(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield record_from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            if number == len(lines):
                return
            raise TraceError(f"{path}:{number}: not a specchat event ({exc})") from None


def load_transcript(path: Path) -> tuple[Transcript, list[Record]]:
    transcript = Transcript()
    records = list(read_records(path))
    for record in records:
        transcript.apply(record)
    transcript.finish()
    return transcript, records


def data_dir() -> Path:
    return Path(platformdirs.user_data_dir("specchat", appauthor=False))


def conversations_dir(base: Path | None = None) -> Path:
    return (base or data_dir()) / "conversations"


def latest_conversation(base: Path | None = None) -> Path | None:
    """The conversation written last (what `--resume` reopens)."""
    folder = conversations_dir(base)
    files = sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return files[-1] if files else None


class ConversationLog:
    """Append-only JSON-lines file for one conversation; opened lazily so an app
    that never sends anything leaves no empty file behind."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    @classmethod
    def new(cls, base: Path | None = None) -> "ConversationLog":
        folder = conversations_dir(base)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}.jsonl"
        n = 1
        while path.exists():
            n += 1
            path = folder / f"{stamp}-{n}.jsonl"
        return cls(path)

    def append(self, *records: Record) -> None:
        """Save records, flushed at once: a crash loses none that were folded in."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write("".join(record_to_json(record) + "\n" for record in records))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
