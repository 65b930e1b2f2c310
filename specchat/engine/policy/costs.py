"""What a step costs on this machine: measured at warm-up, kept up to date by use.

The k auto rule starts from these instead of learning them from the first answer's
cold rounds (draft_length.AdaptiveK.seeded), and the speedup estimate divides by
the plain step (events.estimated_speedup).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specchat.engine.loop.events import Round

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
    warm_plain_step_s: float | None = None  # the warm-up's, which plain_step_s starts from

    def observe(self, r: Round) -> None:
        """Follow the plain step's cost through the conversation: its own plain rounds
        (speculation off, or k auto deciding not to draft) and, between them, what its
        verify passes imply. A pass of n tokens that costs d more than its size did at
        warm-up implies a plain step d / n dearer: the growth is mostly attention over
        a longer context, paid per row. Without that, an answer that drafted in every
        round after a 3,500-token document kept the warm-up's 3.2 ms plain step (the
        real one was ~4.3) and read "≈0.78×" where it ran even."""
        spent = r.draft_time_s + r.verify_time_s
        if r.fed == 1 and not r.unverified:  # one token fed: nothing drafted, no alternatives
            implied = spent
        elif self.warm_plain_step_s and r.fed in self.verify_s:
            growth = (r.verify_time_s - self.verify_s[r.fed]) / r.fed
            implied = max(self.warm_plain_step_s + growth, 0.5 * self.warm_plain_step_s)
        else:
            return
        if self.plain_step_s is None:
            self.plain_step_s = implied
        else:
            self.plain_step_s += _PLAIN_EMA * (implied - self.plain_step_s)
