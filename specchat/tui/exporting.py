"""Saving the conversation on screen: /export (Markdown) and /trace (the event stream
for `specchat replay`). A mixin of SpecChatApp."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .export import to_markdown
from .persist import record_to_json
from .transcript import Prompt, Record, SystemPrompt


class ExportsMixin:
    def _export_path(self, suffix: str) -> Path:
        from .persist import data_dir

        base = self.data_dir or data_dir()
        stem = self.log_file.path.stem if self.log_file else "replay"
        return base / "exports" / f"{stem}{suffix}"

    def export_markdown(self, path: Path | None = None) -> Path | None:
        path = path or self._export_path(".md")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(to_markdown(self.transcript), encoding="utf-8")
        except OSError as exc:
            self.notify(f"export failed: {exc}", severity="error")
            return None
        self.notify(f"exported to {path}")
        return path

    def export_trace(self, path: Path | None = None) -> Path | None:
        """The engine events of this conversation as JSON lines: `specchat replay` reads it."""
        path = path or self._export_path(".trace.jsonl")
        records = [r for r in self._records() if not isinstance(r, (Prompt, SystemPrompt))]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(record_to_json(r) + "\n" for r in records), encoding="utf-8")
        except OSError as exc:
            self.notify(f"trace export failed: {exc}", severity="error")
            return None
        self.notify(f"trace written to {path}")
        return path

    def _records(self) -> Iterable[Record]:
        for a in self.transcript.answers:
            if a.start:
                yield a.start
            yield from a.rounds
            if a.end:
                yield a.end
