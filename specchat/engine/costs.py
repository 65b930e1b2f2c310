"""What a step costs on this machine: measured at warm-up, kept up to date by use.

The k auto rule starts from these instead of learning them from the first answer's
cold rounds (draft_length.AdaptiveK.seeded), and the speedup estimate divides by
the plain step (events.estimated_speedup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specchat.engine.events import Round

_PLAIN_EMA = 0.05  # a turn has many plain rounds; one slow one should not move the figure


@dataclass
class StepCosts:
    # Tokens fed in a verify pass → seconds of a round's verify phase (median at warm-up).
    verify_s: dict[int, float] = field(default_factory=dict)
    # Drafter name → seconds of drafting per drafted token.
    draft_s: dict[str, float] = field(default_factory=dict)
    # A plain decoding step: a round that drafts nothing and feeds one token, drafting
    # and verifying phases together (what a round of `--drafter none` costs).
    plain_step_s: float | None = None

    def observe(self, r: Round) -> None:
        """Follow the plain step's cost through the conversation's own plain rounds
        (speculation off, or k auto deciding not to draft)."""
        if r.fed != 1 or r.unverified:  # one token fed: nothing drafted, no alternatives
            return
        spent = r.draft_time_s + r.verify_time_s
        if self.plain_step_s is None:
            self.plain_step_s = spent
        else:
            self.plain_step_s += _PLAIN_EMA * (spent - self.plain_step_s)
