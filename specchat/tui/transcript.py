"""The conversation as the TUI knows it, rebuilt from a stream of records.

A record is an engine event (TurnStart, Notice, Round, TurnEnd) or one of the two
records only the app writes: `Prompt` (the user pressed Enter; written before the
engine starts so a prompt is never lost) and `SystemPrompt`. The live app, the
autosave file, `--resume` and `specchat replay` all go through `Transcript.apply`,
so every path shows the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from specchat.engine.loop.events import Event, Notice, Round, Totals, TurnEnd, TurnStart


@dataclass
class Prompt:
    type = "prompt"
    text: str


@dataclass
class SystemPrompt:
    type = "system_prompt"
    text: str | None


Record = Union[Event, Prompt, SystemPrompt]


def draft_length(r: Round, auto: bool) -> int:
    """A round's draft length as the screen shows it: under k auto the drafts
    verified (Round.k is only the rule's cap), else the fixed k."""
    return len(r.drafted) if auto else r.k


@dataclass
class Answer:
    """One turn: the user's text and everything the engine said about the answer."""

    user_text: str
    start: TurnStart | None = None
    rounds: list[Round] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    end: TurnEnd | None = None
    # Set when the record stream ended before TurnEnd (app closed or crashed mid-answer).
    interrupted: bool = False
    error: str | None = None  # a failure outside the engine's own TurnEnd
    # The answer's text as the history store kept it, for a turn whose rounds were
    # never traced (a one-shot answer) or whose trace file is gone.
    saved_text: str | None = None

    @property
    def text(self) -> str:
        if self.end:
            return self.end.text
        if self.saved_text is not None and not self.rounds:
            return self.saved_text
        return "".join(r.text for r in self.rounds)

    @property
    def done(self) -> bool:
        return self.end is not None or self.interrupted or self.error is not None

    @property
    def status(self) -> str:
        """streaming | complete | length | stopped | interrupted | error"""
        if self.error:
            return "error"
        if self.end is None:
            return "interrupted" if self.interrupted else "streaming"
        reason = self.end.finish_reason
        if reason == "cancelled":
            return "stopped"
        if reason == "error":
            return "error"
        return "length" if reason == "length" else "complete"

    @property
    def totals(self) -> Totals:
        """The engine's totals once the turn ended; until then summed from rounds
        (elapsed = draft + verify time, the part of a round the engine times)."""
        if self.end is not None:
            return self.end.totals
        t = Totals()
        for r in self.rounds:
            t.add_round(r)
        t.elapsed_s = t.draft_time_s + t.verify_time_s
        return t

    @property
    def auto(self) -> bool:
        """Run with k auto: each Round.k is only the most the rule would draft."""
        return self.start is not None and self.start.k == "auto"

    @property
    def autoregressive(self) -> bool:
        """Run with speculation off: the drafter was `none` or k was fixed at 0."""
        return self.start is not None and (self.start.drafter == "none" or self.start.k == "0")


@dataclass
class Transcript:
    system_prompt: str | None = None
    answers: list[Answer] = field(default_factory=list)

    @property
    def current(self) -> Answer | None:
        return self.answers[-1] if self.answers else None

    def apply(self, record: Record) -> Answer | None:
        """Fold one record in; returns the answer it touched (None for system prompts)."""
        if isinstance(record, SystemPrompt):
            self.system_prompt = record.text
            return None
        if isinstance(record, Prompt):
            self._close_open()
            answer = Answer(user_text=record.text)
            self.answers.append(answer)
            return answer
        if isinstance(record, TurnStart):
            cur = self.current
            # A Prompt record opened this turn already (live/autosave); a bare trace did not.
            if cur is None or cur.start is not None or cur.done:
                self._close_open()
                cur = Answer(user_text=record.user_text)
                self.answers.append(cur)
            cur.start = record
            if record.user_text:
                cur.user_text = record.user_text
            return cur
        cur = self.current
        if cur is None or cur.done:  # an event with no turn open: start one so nothing is dropped
            cur = Answer(user_text="")
            self.answers.append(cur)
        if isinstance(record, Notice):
            cur.notices.append(record.message)
        elif isinstance(record, Round):
            cur.rounds.append(record)
        elif isinstance(record, TurnEnd):
            cur.end = record
        return cur

    def finish(self) -> None:
        """The record stream ended (file loaded): an answer still open was interrupted."""
        self._close_open()

    def _close_open(self) -> None:
        cur = self.current
        if cur is not None and not cur.done:
            cur.interrupted = True
