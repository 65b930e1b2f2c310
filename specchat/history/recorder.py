"""Records as they stream (the app's Prompt and SystemPrompt, the engine's events)
written into the history store, for the chat screen and one-shot mode alike.

A Prompt begins a turn (its row says "interrupted" until the turn ends); the
answer's text is written as the rounds come, at most every `PARTIAL_S` (and at
once for the first), so a kill -9 leaves the answer up to that point; TurnEnd
writes the final text, status, settings and figures. A write that fails is
reported once through `on_error` and recording stops: the chat or the answer goes
on, the round trace (where there is one) still has every round.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from specchat.engine.loop.events import Round, TurnEnd, TurnStart, estimated_speedup
from specchat.tui.transcript import Prompt, Record, SystemPrompt

from .store import HistoryError, HistoryStore

PARTIAL_S = 0.25
MIN_BASELINE_TOKENS = 8  # as the gauges' measured speedup (tui/stats.py)
STATUS = {"eos": "complete", "stop": "complete", "length": "length", "cancelled": "stopped", "error": "error"}


def turn_settings(start: TurnStart) -> dict[str, Any]:
    return {"target": start.target, "drafter": start.drafter, "device": start.device,
            "weights": start.weights or None, "kv_cache": start.kv_cache or None, "k": start.k,
            "temperature": start.temperature}


class TurnRecorder:
    def __init__(self, store: HistoryStore, *, source: str, conversation_id: int | None = None,
                 trace: Path | str | None = None, first_trace_index: int = 0,
                 system_prompt: str | None = None, on_error: Callable[[str], None] = lambda _m: None) -> None:
        self.store = store
        self.source = source
        self.conversation_id = conversation_id
        self.trace = str(trace) if trace is not None else None
        self._trace_index = first_trace_index
        self._system = system_prompt
        self._on_error = on_error
        self._turn: int | None = None
        self._start: TurnStart | None = None
        self._text: list[str] = []
        self._written_at = float("-inf")
        self._written_len = 0
        self._baseline: tuple[str, float] | None = None  # (target, s per token) of a spec-off turn
        self.failed = False

    def append(self, *records: Record) -> None:
        if self.failed:
            return
        try:
            for record in records:
                self._record(record)
        except HistoryError as exc:
            self.failed = True
            self._on_error(str(exc))

    def _record(self, record: Record) -> None:
        if isinstance(record, SystemPrompt):
            self._system = record.text
            if self.conversation_id is not None:
                self.store.set_system_prompt(self.conversation_id, record.text)
        elif isinstance(record, Prompt):
            self._flush()
            if self.conversation_id is None:
                self.conversation_id = self.store.new_conversation(self.source, self._system)
            index = self._trace_index if self.trace else None
            self._turn = self.store.begin_turn(self.conversation_id, record.text, trace=self.trace,
                                               trace_index=index)
            self._trace_index += 1
            self._start, self._text, self._written_at, self._written_len = None, [], float("-inf"), 0
        elif self._turn is None:
            return  # an event of no turn this recorder began
        elif isinstance(record, TurnStart):
            self._start = record
            self.store.update_answer(self._turn, "", **turn_settings(record))
        elif isinstance(record, Round):
            self._text.append(record.text)
            if time.monotonic() - self._written_at >= PARTIAL_S:
                self._flush()
        elif isinstance(record, TurnEnd):
            self.store.finish_turn(self._turn, record.text, STATUS.get(record.finish_reason, "complete"),
                                   **self._figures(record))
            self._turn = None

    def _flush(self) -> None:
        """Write the answer so far, if it grew since the last write."""
        text = "".join(self._text)
        if self._turn is not None and len(text) != self._written_len:
            self.store.update_answer(self._turn, text)
            self._written_len = len(text)
        self._written_at = time.monotonic()

    def close(self) -> None:
        """The stream ended (app closed, second Ctrl+C): keep the answer so far."""
        if not self.failed:
            try:
                self._flush()
            except HistoryError as exc:
                self.failed = True
                self._on_error(str(exc))
        self._turn = None

    def _figures(self, end: TurnEnd) -> dict[str, Any]:
        t = end.totals
        figures: dict[str, Any] = {"tokens": t.tokens, "rounds": t.rounds, "tokens_per_s": t.tokens_per_s or None,
                                   "acceptance": t.acceptance_rate,
                                   "tokens_per_round": t.mean_tokens_per_round or None, "error": end.error}
        start = self._start
        if start is None:
            return figures
        s_per_token = t.elapsed_s / t.tokens if t.tokens and t.elapsed_s > 0 else None
        plain = start.drafter == "none" or start.k == "0"
        if plain:
            if s_per_token and t.tokens >= MIN_BASELINE_TOKENS and end.finish_reason != "error":
                self._baseline = (start.target, s_per_token)
        elif self._baseline and self._baseline[0] == start.target and s_per_token:
            figures.update(speedup=self._baseline[1] / s_per_token, speedup_kind="measured")
        else:
            speedup = estimated_speedup(t, end.plain_step_s or start.plain_step_s)
            if speedup is not None:
                figures.update(speedup=speedup, speedup_kind="estimate")
        return figures
