"""How many tokens to draft each round: fixed, or decided inside the round.

The adaptive rule (`AdaptiveK`) makes three decisions, all from measurements:

1. before a round, whether to draft at all (`choose`): yes while the rounds that
   drafted have lately gained tokens over plain steps in the same time, or lost
   less than about one (each round gains its tokens minus its time in plain steps);
   otherwise plain decoding, with a probe now and then (at growing gaps) so it
   notices when the text becomes predictable again;
2. while drafting, after each drafted token, whether to draft another (`draft_more`);
3. after drafting, how many of the drafts to verify, and how many of the drafter's
   alternatives beside them (`submit`).

2 and 3 read the drafter's own probability p of each drafted token through a
calibration measured in this conversation: P(accepted | the drafts before it held)
by p, in tenths, with a bucket of its own for certain drafts (prompt-lookup copies
have p = 1). With R_i the probability that drafts 1..i all hold, verifying the
first n is worth

    rate(n) = (1 + R_1 + ... + R_n + alternatives) / (drafting time + verify_cost(fed))

tokens per second, and `submit` keeps the best n. An alternative at position i is
worth R_i-1 * (1 - P(draft i holds)) * P(it is the target's token when draft i is
not), the last calibrated the same way by the alternative's p; it adds one token
(the one after it) and widens the pass by one. For each n, `submit` also weighs the
m worthiest alternatives for every m up to what `--alternatives` allows
(alternatives.spare_for), so the measured cost of each token fed decides how many. verify_cost(m) is the measured time
of a target forward over m tokens, so the same rule cuts runs short where each
verified token costs time (bf16 on a CPU) and verifies long runs and alternatives
where a wide pass costs little more than a narrow one (fp16-packed, CUDA).

A fixed length cannot do this: a run of confident drafts or lookup copies (on the
bench a copy is accepted about 3 times in 4) goes on, while a run is cut where the
drafter is unsure (p < 0.2: accepted fewer than 1 time in 10).

Greedy rounds use all three. Sampled rounds use only 1 and 2: whether a sampled
draft is verified must not depend on that draft itself (only on the ones before
it), or the verified drafts would not be draws from the drafter's distribution and
the answer would leave the target's. `draft_more` looks only at drafts already
made, so the loop verifies every draft of a sampled round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from specchat.engine.calibration import Calibration
from specchat.engine.costs import StepCosts
from specchat.engine.drafters import Alternative, choose_alternatives
from specchat.engine.events import Round

_DECAY = 0.97  # per drafting round; roughly the last ~30 rounds matter
_EMA = 0.2
_STALL = 1.5  # a drafting round counts at most this many times its expected time
_TOLERATED_LOSS = 1.0  # tokens (decayed sum) drafting may lag plain decoding by before it stops

Spare = Callable[[int], int]  # alternatives that may be verified beside a run of n drafts


class FixedK:
    def __init__(self, k: int) -> None:
        self.k = k

    def choose(self, limit: int) -> int:
        return max(0, min(self.k, limit))

    def draft_more(self, ps: list[float]) -> bool:
        return True  # the drafter stops at k

    def submit(self, ps: list[float], alternatives: Sequence[Alternative] = (),
               spare: Spare = lambda n: 0) -> tuple[int, list[Alternative]]:
        return len(ps), choose_alternatives(alternatives, ps, spare(len(ps)))

    def observe(self, r: Round, catchup_tokens: int = 0) -> None:
        pass

    def label(self) -> str:
        return str(self.k)


@dataclass
class AdaptiveK:
    max_k: int = 8
    first_k: int = 2  # before anything is measured
    verify_cost: dict[int, float] = field(default_factory=dict)  # tokens fed → seconds (EMA)
    draft_cost: float | None = None  # seconds per drafted token (EMA)
    calibration: Calibration = field(default_factory=Calibration)  # drafts
    alternative_calibration: Calibration = field(default_factory=Calibration)  # where the draft was not
    # Decayed sum over the rounds that drafted of their tokens minus the plain steps
    # their time would have bought; None until a round has drafted.
    drafting_gain: float | None = None
    _rounds_at_zero: int = 0
    _probe_gap: int = 16

    @classmethod
    def seeded(cls, max_k: int, costs: StepCosts | None, drafter: str,
               calibration: Calibration | None) -> AdaptiveK:
        """A rule that starts from measurements instead of guesses: the warm-up's pass
        and drafting costs on this machine, and the drafter's saved calibration. With
        costs known, the first round may draft up to the cap (draft_more and submit
        cut it where it stops paying)."""
        rule = cls(max_k=max_k)
        if costs is not None and costs.verify_s:
            rule.verify_cost = dict(costs.verify_s)
            rule.draft_cost = costs.draft_s.get(drafter)
            rule.first_k = max_k
        if calibration is not None:
            rule.calibration = calibration.seed()
        return rule

    def label(self) -> str:
        return "auto"

    # -- measurements -------------------------------------------------------
    def observe(self, r: Round, catchup_tokens: int = 0) -> None:
        fed = r.fed
        made = len(r.drafted) + r.unverified
        # What the cost model expected the round to take, before the round updates it.
        expected = self._round_time(made, len(r.drafted), len(r.alternatives)) \
            if self.verify_cost and self.draft_cost is not None else None
        old = self.verify_cost.get(fed)
        self.verify_cost[fed] = r.verify_time_s if old is None else old + _EMA * (r.verify_time_s - old)
        if r.k == 0:
            return
        # A round that drafted and then verified nothing still paid for its drafts.
        spent = r.draft_time_s + r.verify_time_s
        if expected is not None:
            # A one-off stall (the chat screen mounting its first answer took a 170 ms
            # round where 65 were expected) is not drafting's fault, and plain steps are
            # not charged for theirs: a round counts at most _STALL times the expected.
            spent = min(spent, _STALL * expected)
        gain = r.tokens - spent / self._verify_time(1)
        self.drafting_gain = gain if self.drafting_gain is None else self.drafting_gain * _DECAY + gain
        # Floored, so that after a long bad stretch one good probe turns drafting back on.
        self.drafting_gain = max(self.drafting_gain, -2.0 * _TOLERATED_LOSS)
        if made:
            # Catch-up tokens (fed after a bonus) are part of the drafting price.
            self.draft_cost = r.draft_time_s / made if self.draft_cost is None else \
                self.draft_cost + _EMA * (r.draft_time_s / made - self.draft_cost)
        if r.drafted:
            self._calibrate(r)

    def _calibrate(self, r: Round) -> None:
        self.calibration.decay()
        self.alternative_calibration.decay()
        rejected = self.calibration.add_run(r.drafted)
        # Only where the run was rejected was an alternative reached with its draft wrong.
        for a in r.alternatives:
            if a.position == rejected:
                self.alternative_calibration.add(a.p, a.accepted)

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

    def _round_time(self, drafted: int, verified: int, alternatives: int = 0) -> float:
        """Seconds of a round that drafts `drafted` tokens and verifies the first
        `verified` and `alternatives` more."""
        return drafted * (self.draft_cost or 0.0) + self._verify_time(1 + verified + alternatives)

    def _reach(self, ps: list[float]) -> list[float]:
        """R_0..R_n: the probability that the first i drafts all hold."""
        out = [1.0]
        for p in ps:
            out.append(out[-1] * self.calibration.rate(p))
        return out

    def _expected_rates(self, reach: list[float]) -> list[float]:
        """Expected tokens per second of the round when the first n of its drafts are
        verified without alternatives, for n = 0..drafts (reach: `_reach` of them)."""
        drafted = len(reach) - 1
        return [sum(reach[: n + 1]) / self._round_time(drafted, n) for n in range(drafted + 1)]

    # -- decisions ----------------------------------------------------------
    def choose(self, limit: int) -> int:
        """The most tokens to draft this round (0: a plain step)."""
        limit = max(0, min(self.max_k, limit))
        if limit == 0:
            return 0
        if self.drafting_gain is None:
            return min(self.first_k, limit)
        if self.drafting_gain > -_TOLERATED_LOSS:
            self._rounds_at_zero, self._probe_gap = 0, 16
            return limit
        self._rounds_at_zero += 1
        if self._rounds_at_zero >= self._probe_gap:
            # Probe: the text may have become predictable. Gaps grow while probes fail,
            # so a drafter that never pays costs almost nothing.
            self._rounds_at_zero = 0
            self._probe_gap = min(self._probe_gap * 2, 256)
            return limit
        return 0

    def draft_more(self, ps: list[float]) -> bool:
        """After drafts with probabilities `ps`: is one more worth drafting? Yes when,
        were it as likely right as the best drafts are, verifying it too would beat
        the best this round can do without it."""
        if not self.verify_cost:
            return True  # nothing measured yet: draft up to the cap
        reach = self._reach(ps)
        hoped = (sum(reach) + reach[-1] * self.calibration.best_rate()) / self._round_time(len(ps) + 1, len(ps) + 1)
        return hoped > max(self._expected_rates(reach))

    def submit(self, ps: list[float], alternatives: Sequence[Alternative] = (),
               spare: Spare = lambda n: 0) -> tuple[int, list[Alternative]]:
        """How many of the drafts to verify, and which alternatives beside them: the m
        worthiest of the `spare(n)` a run of n may have (alternatives.spare_for), for
        the n and m (0 included) with the best expected rate."""
        if not self.verify_cost or not ps:
            return len(ps), choose_alternatives(alternatives, ps, spare(len(ps)))
        reach = self._reach(ps)
        plain = self._expected_rates(reach)

        def worth(a: Alternative) -> float:  # expected tokens it adds
            return reach[a.position] * (1.0 - self.calibration.rate(ps[a.position])) \
                * self.alternative_calibration.rate(a.p)

        best, choice = -1.0, (0, [])
        for n in range(len(ps) + 1):
            if plain[n] > best:
                best, choice = plain[n], (n, [])
            # The m worthiest of the alternatives a run of n may have, for every m.
            ranked = sorted(choose_alternatives(alternatives, ps[:n], spare(n)), key=worth, reverse=True)
            tokens = sum(reach[: n + 1])
            for m in range(1, len(ranked) + 1):
                tokens += worth(ranked[m - 1])
                rate = tokens / self._round_time(len(ps), n, m)
                if rate > best:
                    best, choice = rate, (n, ranked[:m])
        n, beside = choice
        return n, sorted(beside, key=lambda a: (a.position, -a.p))  # in position order
