"""What the gauges show, computed from the transcript only (so replay shows the same).

Averages say what they are over: acceptance is accepted/drafted over drafted tokens;
tokens per round is over rounds; tokens/s per round is that round's tokens over its
draft + verify time.

Speedup, measured: against the most recent finished turn run with speculation off
(`/spec off`, i.e. drafter `none` or k = 0) on the same target, with at least
`MIN_BASELINE_TOKENS` tokens. Its time per token (elapsed / tokens, prefill
excluded) divided by the selected turn's is the speedup (different prompts, so
still approximate; `specchat bench` runs the same prompt both ways).

Speedup, estimated: until such a turn exists, from the engine's measured plain step
(TurnStart.plain_step_s: warm-up, then the conversation's plain rounds):
tokens × plain step ÷ the turn's drafting + verifying time (events.estimated_speedup),
live from the first round of the first answer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from specchat.engine.loop.events import Totals, estimated_speedup

from .transcript import Answer, Transcript, draft_length

MIN_BASELINE_TOKENS = 8
SPARK_ROUNDS = 32  # how many recent rounds the tokens/s sparkline shows


@dataclass
class Baseline:
    answer_index: int  # 0-based index of the turn measured
    target: str
    s_per_token: float


@dataclass
class GaugeValues:
    turn: Totals
    session: Totals
    histogram: dict[int, int]  # accepted drafted tokens per round → rounds, over the session
    max_k: int  # widest k seen, so the histogram shows empty bins up to it
    round_rates: list[float]  # tokens/s of the most recent rounds, oldest first
    current_k: int | None  # k asked of the drafter in the latest round
    k_setting: str | None  # "auto" or the fixed k of the latest turn
    baseline: Baseline | None
    speedup: float | None  # of the latest turn against the baseline
    # Without a baseline: the latest speculative turn's estimate, and the plain step it used.
    estimate: float | None = None
    plain_step_s: float | None = None


def _s_per_token(t: Totals) -> float | None:
    return t.elapsed_s / t.tokens if t.tokens and t.elapsed_s > 0 else None


def find_baseline(answers: list[Answer], target: str | None) -> Baseline | None:
    for i in range(len(answers) - 1, -1, -1):
        a = answers[i]
        if a.end is None or not a.autoregressive or a.status == "error":
            continue
        if target is not None and a.start.target != target:
            continue
        spt = _s_per_token(a.totals)
        if spt is not None and a.totals.tokens >= MIN_BASELINE_TOKENS:
            return Baseline(i, a.start.target, spt)
    return None


def session_totals(answers: list[Answer]) -> Totals:
    total = Totals()
    for a in answers:
        total.add(a.totals)
    return total


def round_rate(r) -> float:
    spent = r.draft_time_s + r.verify_time_s
    return r.tokens / spent if spent > 0 else 0.0


def compute(transcript: Transcript) -> GaugeValues:
    answers = transcript.answers
    latest = next((a for a in reversed(answers) if a.rounds or a.start), None)
    histogram: Counter[int] = Counter()
    max_k = 0
    for a in answers:
        for r in a.rounds:
            histogram[r.n_accepted] += 1
            max_k = max(max_k, r.k)
    rates = [round_rate(r) for a in answers for r in a.rounds][-SPARK_ROUNDS:]
    turn = latest.totals if latest else Totals()
    target = latest.start.target if latest and latest.start else None
    baseline = find_baseline(answers, target)
    speedup = estimate = plain_step = None
    if baseline and latest and not latest.autoregressive:
        spt = _s_per_token(turn)
        speedup = baseline.s_per_token / spt if spt else None
    elif latest and latest.start and not latest.autoregressive:
        # the newest figure: a round carries the plain step as it stood after it
        plain_step = next((r.plain_step_s for r in reversed(latest.rounds) if r.plain_step_s),
                          latest.start.plain_step_s)
        estimate = estimated_speedup(turn, plain_step)
    return GaugeValues(
        turn=turn,
        session=session_totals(answers),
        histogram=dict(histogram),
        max_k=max_k,
        round_rates=rates,
        current_k=draft_length(latest.rounds[-1], latest.auto) if latest and latest.rounds else None,
        k_setting=latest.start.k if latest and latest.start else None,
        baseline=baseline,
        speedup=speedup,
        estimate=estimate,
        plain_step_s=plain_step,
    )
