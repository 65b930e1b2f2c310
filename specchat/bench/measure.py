"""One prompt through the engine, measured from its own events.

Time is the engine's generation time (`TurnEnd.totals.elapsed_s`: prefill and the
consumer's time excluded), summed over a prompt's turns; so tokens/s here is
generated tokens per second of decoding, the quantity speedup is a ratio of.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from specchat.bench.prompts import BenchPrompt
from specchat.engine.loop.events import Round, TurnEnd


class BenchError(Exception):
    """A prompt the engine could not answer; one line naming the prompt."""


@dataclass
class Measurement:
    tokens: int = 0
    elapsed_s: float = 0.0
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    alternatives: int = 0  # verified beside the drafted runs
    alternatives_accepted: int = 0
    unverified: int = 0  # drafts made and left unverified by the k auto rule
    draft_s: float = 0.0  # of elapsed_s: proposing drafts, and the target's verify passes
    verify_s: float = 0.0
    # Per draft position i: rounds that drafted a token at i, and how many of those accepted it.
    position_drafted: list[int] = field(default_factory=list)
    position_accepted: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # the answer of each turn

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def add_round(self, r: Round) -> None:
        self.unverified += r.unverified
        # Position i counts as accepted when its draft or an alternative there was.
        for i in range(len(r.drafted)):
            while len(self.position_drafted) <= i:
                self.position_drafted.append(0)
                self.position_accepted.append(0)
            self.position_drafted[i] += 1
            self.position_accepted[i] += int(i < r.n_accepted)

    def add_turn(self, end: TurnEnd) -> None:
        t = end.totals
        self.tokens += t.tokens
        self.elapsed_s += t.elapsed_s
        self.rounds += t.rounds
        self.drafted += t.drafted
        self.accepted += t.accepted
        self.alternatives += t.alternatives
        self.alternatives_accepted += t.alternatives_accepted
        self.draft_s += t.draft_time_s
        self.verify_s += t.verify_time_s
        self.texts.append(end.text)


def measure(target, drafter, prompt: BenchPrompt, settings, costs=None) -> Measurement:
    """Run every turn of `prompt` in a fresh session, on the calling thread (the bench
    runs on the engine thread, as chat turns do); BenchError if a turn fails.
    `costs`: the warm-up's measurements, which a new session of a user's starts from."""
    from specchat.engine.loop.session import ChatSession

    if hasattr(drafter, "reset"):
        drafter.reset()  # no state carried over from the previous prompt
    session = ChatSession(target, drafter, settings=copy.copy(settings), costs=copy.deepcopy(costs))
    m = Measurement()
    for turn in prompt.turns:
        for event in session.send(turn):
            if isinstance(event, Round):
                m.add_round(event)
            elif isinstance(event, TurnEnd):
                if event.finish_reason in ("error", "cancelled"):
                    raise BenchError(f"prompt {prompt.id or prompt.category}: "
                                     f"{event.error or event.finish_reason}")
                m.add_turn(event)
    return m
