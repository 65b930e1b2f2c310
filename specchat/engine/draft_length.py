"""How many tokens to draft each round: fixed, or chosen from measurements.

The adaptive rule (`AdaptiveK`) picks the k that maximises expected tokens per
second of the next round:

    E[tokens](k) = 1 + sum_{j=1..k} prod_{i=1..j} a_i
    time(k)      = k * draft_cost + verify_cost(k + 1 + spare(k))

a_i is the measured probability that drafted position i is accepted given that the
ones before it were (decayed counts, so it follows the conversation);
verify_cost(m) is the measured time of a target forward over m tokens; draft_cost
the measured time per drafted token; spare(k) the alternatives verified beside a
run of k (alternatives.py), and a position counts as accepted when its drafted token
or an alternative there was. Measured, not assumed: with bf16 weights on a
CPU a verify pass of 4 tokens costs about twice a single step, with fp16-packed
weights (the CPU default) or on a GPU almost the same, and the same rule does the
right thing on all of them. k = 0 is plain decoding; when the
drafter does not pay the rule settles there, probing a short draft now and then
(with growing gaps) so it notices when the text becomes predictable again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from specchat.engine.events import Round

_DECAY = 0.97  # per observation; roughly the last ~30 rounds matter
# The first position's prior is Beta(1, 2): accepted one time in three until measured,
# so a drafter must earn its drafts (a wasted verify of k tokens costs up to ~2 steps
# on a CPU in bf16). Each later position's prior is centred on the estimate of the one before,
# so a drafter that is right at position i gets to try position i + 1.
_PRIOR_FIRST = 1.0 / 3.0
_PRIOR_STRENGTH = 3.0
_EMA = 0.2


class FixedK:
    def __init__(self, k: int) -> None:
        self.k = k

    def choose(self, limit: int) -> int:
        return max(0, min(self.k, limit))

    def observe(self, r: Round, catchup_tokens: int = 0) -> None:
        pass

    def label(self) -> str:
        return str(self.k)


@dataclass
class AdaptiveK:
    max_k: int = 8
    first_k: int = 2  # before anything is measured
    accepted: list[float] = field(default_factory=list)  # decayed counts per position
    tried: list[float] = field(default_factory=list)
    verify_cost: dict[int, float] = field(default_factory=dict)  # tokens fed → seconds (EMA)
    draft_cost: float | None = None  # seconds per drafted token (EMA)
    spare: Callable[[int], int] = lambda k: 0  # alternatives verified beside a run of k
    _rounds_at_zero: int = 0
    _probe_gap: int = 16

    def label(self) -> str:
        return "auto"

    # -- measurements -------------------------------------------------------
    def observe(self, r: Round, catchup_tokens: int = 0) -> None:
        fed = r.fed
        old = self.verify_cost.get(fed)
        self.verify_cost[fed] = r.verify_time_s if old is None else old + _EMA * (r.verify_time_s - old)
        if r.drafted:
            # Catch-up tokens (fed after a bonus) are part of the drafting price.
            per_token = r.draft_time_s / len(r.drafted)
            self.draft_cost = per_token if self.draft_cost is None else \
                self.draft_cost + _EMA * (per_token - self.draft_cost)
            self._observe_acceptance(r)

    def _observe_acceptance(self, r: Round) -> None:
        while len(self.tried) < len(r.drafted):
            self.tried.append(0.0)
            self.accepted.append(0.0)
        self.tried[:] = [t * _DECAY for t in self.tried]
        self.accepted[:] = [a * _DECAY for a in self.accepted]
        n = r.n_accepted
        # After an accepted alternative the run's next draft followed the rejected
        # token, not the alternative: that position was not tried.
        judged = n if any(a.accepted for a in r.alternatives) else min(n + 1, len(r.drafted))
        for i in range(judged):
            self.tried[i] += 1.0
            self.accepted[i] += float(i < n)

    def acceptances(self, n: int) -> list[float]:
        """P(position i accepted | positions before it accepted) for i < n."""
        rates: list[float] = []
        mean = _PRIOR_FIRST
        for i in range(n):
            a0, b0 = _PRIOR_STRENGTH * mean, _PRIOR_STRENGTH * (1.0 - mean)
            tried = self.tried[i] if i < len(self.tried) else 0.0
            acc = self.accepted[i] if i < len(self.accepted) else 0.0
            mean = (acc + a0) / (tried + a0 + b0)
            rates.append(mean)
        return rates

    def _verify_time(self, fed: int) -> float:
        """Measured cost of feeding `fed` tokens, interpolated/extrapolated linearly
        from the measured sizes."""
        if fed in self.verify_cost:
            return self.verify_cost[fed]
        points = sorted(self.verify_cost.items())
        if len(points) == 1:
            (m, t), = points
            return t * (1.0 + 0.35 * (fed - m) / m)  # until a second size is measured
        below = [p for p in points if p[0] < fed] or points[:1]
        above = [p for p in points if p[0] > fed] or points[-1:]
        (m0, t0), (m1, t1) = below[-1], above[0]
        if m0 == m1:
            (m0, t0), (m1, t1) = points[-2], points[-1]
        slope = max((t1 - t0) / (m1 - m0), 0.0)
        return t0 + slope * (fed - m0)

    def expected_rates(self, limit: int) -> list[float]:
        """Expected tokens per second of a round drafting k tokens, for k = 0..limit."""
        rates, tokens, survive = [], 1.0, 1.0
        acceptance = self.acceptances(limit)
        for k in range(limit + 1):
            if k:
                survive *= acceptance[k - 1]
                tokens += survive
            seconds = k * (self.draft_cost or 0.0) + self._verify_time(k + 1 + (self.spare(k) if k else 0))
            rates.append(tokens / seconds if seconds > 0 else 0.0)
        return rates

    # -- decision -----------------------------------------------------------
    def choose(self, limit: int) -> int:
        limit = max(0, min(self.max_k, limit))
        if limit == 0:
            return 0
        if not self.verify_cost or self.draft_cost is None:
            return min(self.first_k, limit)
        rates = self.expected_rates(limit)
        best = max(range(limit + 1), key=rates.__getitem__)
        if best > 0:
            self._rounds_at_zero, self._probe_gap = 0, 16
            return best
        self._rounds_at_zero += 1
        if self._rounds_at_zero >= self._probe_gap:
            # Probe: the text may have become predictable. Gaps grow while probes fail,
            # so a drafter that never pays costs almost nothing.
            self._rounds_at_zero = 0
            self._probe_gap = min(self._probe_gap * 2, 256)
            return min(2, limit)
        return 0
