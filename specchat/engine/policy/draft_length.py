"""How many tokens to draft each round: fixed, or decided inside the round.

The adaptive rule (`AdaptiveK`) makes three decisions, all from measurements:

1. before a round, whether to draft at all, and at most how many (`choose`): yes
   while a round's first draft has lately held more often than its price (its
   drafting and its row of the verify pass, in plain steps: about a quarter on a
   2-core CPU), a slow mean that a few unlucky rounds do not tip; otherwise plain
   decoding, with a probe now and then (at growing gaps) so it notices when the
   text becomes predictable again. Runs start at two drafts in each answer and
   lengthen by one while they hold whole (shorten by one when a first draft fails):
   the calibration below is the drafter's on its own kind of text;
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

from specchat.engine.drafters.protocol import Alternative, choose_alternatives
from specchat.engine.loop.events import Round
from specchat.engine.policy.calibration import Calibration
from specchat.engine.policy.costs import StepCosts

_HELD_EMA = 0.05  # per drafting round: the first drafts' mean follows roughly the last twenty
_FIRST_HELD_PRIOR = 0.5
_STEADY_CATCHUP = 3  # tokens a drafter feeds before drafting, round after round
_EMA = 0.2
_FIRST_PROBE_GAP, _LAST_PROBE_GAP = 4, 64  # plain rounds before a probe: doubling while probes fail
_RESUMED_MARGIN = 0.05  # how far above its price a held probe puts the first drafts' mean
_FIRST_RUN_CAP = 2  # drafts a run may have at the start of an answer
_OUTLIER = 1.5  # a cost measurement counts at most this many times the current figure

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

    def new_answer(self) -> None:
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
    # How often the first draft of a drafting round has lately held (an EMA; None
    # until a round has drafted). Drafting goes on while that beats what a first
    # draft costs (`_first_draft_price`); the drafts after it are decided by p.
    first_held: float | None = None
    _rounds_at_zero: int = 0
    _probe_gap: int = _FIRST_PROBE_GAP
    _probing: bool = False  # the round chosen last is a probe
    _run_cap: int = _FIRST_RUN_CAP  # the longest run a round may draft now (_follow_run_cap)

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

    def new_answer(self) -> None:
        """A new answer is new text: what the last one said of the drafts (how often
        they held, how long a run may be) is guessed again, so that an answer the
        drafter could not follow does not leave drafting off for the next one. The
        costs and the calibration carry over."""
        if self.first_held is not None:
            self.first_held = _FIRST_HELD_PRIOR
        self._rounds_at_zero, self._probe_gap, self._run_cap = 0, _FIRST_PROBE_GAP, _FIRST_RUN_CAP

    # -- measurements -------------------------------------------------------
    def observe(self, r: Round, catchup_tokens: int = 0) -> None:
        self.verify_cost[r.fed] = _follow(self.verify_cost.get(r.fed), r.verify_time_s)
        made = len(r.drafted) + r.unverified
        probe, self._probing = self._probing, False
        if r.k == 0 or not made:
            return
        # A draft left unverified (the rule judged it unlikely) gained nothing either.
        held = float(bool(r.drafted) and r.drafted[0].accepted)
        before = _FIRST_HELD_PRIOR if self.first_held is None else self.first_held
        self.first_held = before + _HELD_EMA * (held - before)
        if probe and held:
            # The mean moves slowly, so that a few unlucky rounds do not stop drafting;
            # a probe that holds starts it again at once (where drafts that always hold
            # could pay at all), and the rounds after it decide.
            price = self._first_draft_price()
            if price + _RESUMED_MARGIN < 1.0:
                self.first_held = max(self.first_held, price + _RESUMED_MARGIN)
        # The token or two fed after each round (a correction, a bonus) are part of the
        # drafting price; a catch-up after plain rounds is not: it is paid once when
        # drafting resumes, and counting it made every probe look dear.
        if catchup_tokens <= _STEADY_CATCHUP:
            self.draft_cost = _follow(self.draft_cost, r.draft_time_s / made)
        self._follow_run_cap(r)
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
        from the measured sizes, and no more than any wider pass measured: stalls only
        ever slow a pass, and a chat screen starting up during the warm-up once timed
        2-token passes at 13.8 ms against 3.2 for 3 tokens, which priced drafting out
        for the whole answer (no 2-token pass then ran to correct it)."""
        wider = [t for m, t in self.verify_cost.items() if m > fed]
        return min([self._measured_or_interpolated(fed)] + wider)

    def _measured_or_interpolated(self, fed: int) -> float:
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
        limit = min(limit, self._run_cap)
        if self.first_held is None or self.draft_cost is None:
            return min(self.first_k, limit)
        if self.first_held > self._first_draft_price():
            self._rounds_at_zero, self._probe_gap = 0, _FIRST_PROBE_GAP
            return limit
        self._rounds_at_zero += 1
        if self._rounds_at_zero >= self._probe_gap:
            # Probe: the text may have become predictable. Gaps grow while probes fail,
            # so a drafter that never pays costs almost nothing.
            self._rounds_at_zero = 0
            self._probe_gap = min(self._probe_gap * 2, _LAST_PROBE_GAP)
            self._probing = True
            return limit
        return 0

    def _follow_run_cap(self, r: Round) -> None:
        """The longest run a round may draft: one shorter when a round's first draft is
        rejected, one longer when a run of the cap's length holds whole. The calibration
        is the drafter's on its own kind of prompts; on other text its confident
        drafts held far less often (p 0.4-0.9: 0.28-0.71 against 0.49-0.92), and the
        long runs it asked for cost more than they gained until the calibration had
        learned the text."""
        if not r.drafted:
            return
        if not r.drafted[0].accepted:
            self._run_cap = max(1, self._run_cap - 1)
        elif all(t.accepted for t in r.drafted) and len(r.drafted) >= self._run_cap:
            self._run_cap = min(self.max_k, self._run_cap + 1)

    def _first_draft_price(self) -> float:
        """How often a round's first draft must hold for drafting to pay: its drafting
        and its row of the verify pass, in plain steps."""
        plain = self._verify_time(1)
        return ((self.draft_cost or 0.0) + self._verify_time(2) - plain) / plain

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


def _follow(current: float | None, measured: float) -> float:
    """An EMA step towards `measured`, a rise clipped to _OUTLIER times `current`: one
    stalled pass (the first of a turn after the front end's work took 2x) must not
    make a pass size look dear for the rest of the turn. A fall is not clipped:
    stalls only slow a pass, so a faster one corrects a figure a stall inflated."""
    if current is None:
        return measured
    return current + _EMA * (min(measured, current * _OUTLIER) - current)
