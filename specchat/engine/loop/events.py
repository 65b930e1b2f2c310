"""The event stream: the one contract between the engine and every front end.

The engine yields these for each turn, in this order::

    TurnStart, Notice*, Round+, TurnEnd

One speculation round is one `Round`. Every event is a plain dataclass that
serializes to one JSON line (`to_json`) and reads back equal (`event_from_json`),
so a trace file is just the stream written down.

Text invariant: for a turn, the concatenation over its rounds of
`round.text` equals `TurnEnd.text` (the pieces of tokens cut by a stop string
or an end-of-turn token are empty strings).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal, Union

FinishReason = Literal["eos", "length", "stop", "cancelled", "error"]
# How the target's own token that ends a round came about.
EmittedKind = Literal["correction", "bonus", "target"]


@dataclass
class DraftedToken:
    """One token the drafter proposed, and the target's verdict on it."""

    token_id: int
    text: str  # its text piece, as it would have been printed
    p: float  # the drafter's probability of this token (1.0 for a deterministic drafter)
    q: float  # the target's probability of this token at the same position
    accepted: bool


@dataclass
class AlternativeToken:
    """Another candidate the drafter offered for drafted position `position` (in place
    of drafted[position]), verified in the same target pass (greedy rounds only).
    An accepted one extends the accepted run: it stands at `position` of the answer."""

    position: int
    token_id: int
    text: str  # its text piece after the drafted run before it
    p: float
    q: float
    accepted: bool


@dataclass
class EmittedToken:
    """The token the target itself emitted at the end of a round.

    kind is "correction" after a rejection, "bonus" after every drafted token
    was accepted (or the run up to an accepted alternative: the token after it), and
    "target" when nothing was drafted (plain decoding).
    """

    token_id: int
    text: str
    kind: EmittedKind
    q: float  # the target's probability of this token (after sampling settings)


@dataclass
class TurnStart:
    type: ClassVar[str] = "turn_start"
    turn: int
    target: str
    drafter: str
    device: str
    k: str  # "auto" or the fixed draft length
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    prompt_tokens: int  # tokens in the whole templated conversation for this turn
    reused_tokens: int  # of those, tokens whose KV cache was kept from earlier turns
    prefill_time_s: float
    user_text: str = ""
    repetition_penalty: float = 1.0  # traces recorded before it existed had none
    # The engine's measured plain step (a round drafting nothing, one token fed) when
    # the turn began: warm-up, then the conversation's plain rounds. None: unmeasured.
    plain_step_s: float | None = None
    # How the target's weights are held ("int4", "fp16", "nf4", …; cpu/quant/weight_formats.py).
    weights: str = ""
    # "int8" where its KV cache is int8 codes (cpu/int8_kv.py); "" where it follows the weights.
    kv_cache: str = ""

    def held_on(self) -> str:
        """The device and how the target is held there, as the screens show it ("cpu q4_1 (KV int8)")."""
        held = f"{self.device} {self.weights}" if self.weights else self.device
        return held + (f" (KV {self.kv_cache})" if self.kv_cache else "")


@dataclass
class Notice:
    """Something a user should be told that is not an error (history truncated, …)."""

    type: ClassVar[str] = "notice"
    turn: int
    message: str


@dataclass
class Round:
    type: ClassVar[str] = "round"
    turn: int
    index: int  # 0-based round number within the turn
    k: int  # draft length asked of the drafter this round
    drafted: list[DraftedToken]
    emitted: EmittedToken | None  # None only when the turn stopped inside the drafted run
    draft_time_s: float
    verify_time_s: float
    alternatives: list[AlternativeToken] = field(default_factory=list)
    unverified: int = 0  # drafts made after `drafted` that the draft-length rule did not verify
    # The plain step's cost as the session knows it after this round (warm-up, then
    # every plain round so far, this turn's too): what the speedup estimate divides by.
    plain_step_s: float | None = None

    @property
    def accepted(self) -> list[DraftedToken | AlternativeToken]:
        """The accepted drafts in answer order: the accepted run, then an accepted
        alternative (at the position where the run was rejected)."""
        return [t for t in self.drafted if t.accepted] + [a for a in self.alternatives if a.accepted]

    @property
    def n_accepted(self) -> int:
        return len(self.accepted)

    @property
    def fed(self) -> int:
        """Tokens the verify pass fed: the last verified one, the run, the alternatives."""
        return 1 + len(self.drafted) + len(self.alternatives)

    @property
    def tokens(self) -> int:
        """Tokens this round added to the answer."""
        return self.n_accepted + (1 if self.emitted is not None else 0)

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.accepted) + (self.emitted.text if self.emitted else "")

    def shown(self, rejected: bool = False) -> list[tuple[str, str, int]]:
        """(text, kind, position) of the round's tokens as an answer shows them, in
        order: the accepted run, the rejected drafts if asked for (where they were
        rejected), an accepted alternative, the target's token. kind is "accepted",
        "rejected" or the emitted kind; position is the drafted position, or for
        the target's token its place in the answer (n_accepted)."""
        out = [(t.text, "accepted" if t.accepted else "rejected", i)
               for i, t in enumerate(self.drafted) if t.accepted or rejected]
        out += [(a.text, "accepted", a.position) for a in self.alternatives if a.accepted]
        if self.emitted is not None:
            out.append((self.emitted.text, self.emitted.kind, self.n_accepted))
        return out


@dataclass
class Totals:
    tokens: int = 0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    elapsed_s: float = 0.0  # generation time, prefill excluded
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    alternatives: int = 0  # alternatives verified beside the drafted runs
    alternatives_accepted: int = 0  # of those, accepted (also counted in `accepted`)

    @property
    def acceptance_rate(self) -> float | None:
        """accepted / drafted, over drafted positions (an alternative accepted in place
        of a rejected draft counts for its position); None when nothing was drafted."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def mean_tokens_per_round(self) -> float:
        """tokens / rounds: an average over rounds, not over tokens."""
        return self.tokens / self.rounds if self.rounds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add_round(self, r: Round) -> None:
        self.tokens += r.tokens
        self.rounds += 1
        self.drafted += len(r.drafted)
        self.accepted += r.n_accepted
        self.draft_time_s += r.draft_time_s
        self.verify_time_s += r.verify_time_s
        self.alternatives += len(r.alternatives)
        self.alternatives_accepted += sum(1 for a in r.alternatives if a.accepted)

    def add(self, other: Totals) -> None:
        """Add another turn's counts (every field is a count or a time)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "acceptance_rate": self.acceptance_rate,
            "mean_tokens_per_round": self.mean_tokens_per_round,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_s": self.elapsed_s,
            "alternatives": self.alternatives,
            "alternatives_accepted": self.alternatives_accepted,
        }


def estimated_speedup(totals: Totals, plain_step_s: float | None) -> float | None:
    """What the turn's tokens would have taken decoding plainly over what its rounds
    took: tokens × plain step ÷ (drafting + verifying time). Both sides are round
    times (the loop's bookkeeping between rounds is outside both). None without a
    measured plain step or a token."""
    spent = totals.draft_time_s + totals.verify_time_s
    if not plain_step_s or not totals.tokens or spent <= 0:
        return None
    return totals.tokens * plain_step_s / spent


@dataclass
class TurnEnd:
    type: ClassVar[str] = "turn_end"
    turn: int
    finish_reason: FinishReason
    text: str
    totals: Totals = field(default_factory=Totals)
    error: str | None = None
    plain_step_s: float | None = None  # as Round.plain_step_s, at the turn's end


Event = Union[TurnStart, Notice, Round, TurnEnd]
_EVENT_TYPES: dict[str, type] = {cls.type: cls for cls in (TurnStart, Notice, Round, TurnEnd)}


def to_dict(event: Event) -> dict[str, Any]:
    return {"type": event.type, **asdict(event)}


def to_json(event: Event) -> str:
    """One JSON line (no newline) for the event."""
    return json.dumps(to_dict(event), ensure_ascii=False)


def event_from_dict(data: dict[str, Any]) -> Event:
    data = dict(data)
    kind = data.pop("type", None)
    cls = _EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    known = {f.name for f in fields(cls)}
    data = {k: v for k, v in data.items() if k in known}
    if cls is Round:
        data["drafted"] = [DraftedToken(**t) for t in data["drafted"]]
        data["alternatives"] = [AlternativeToken(**a) for a in data.get("alternatives", [])]
        data["emitted"] = EmittedToken(**data["emitted"]) if data.get("emitted") else None
    elif cls is TurnEnd:
        data["totals"] = Totals(**data.get("totals", {}))
    return cls(**data)


def event_from_json(line: str) -> Event:
    return event_from_dict(json.loads(line))
