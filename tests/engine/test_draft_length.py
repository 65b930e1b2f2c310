"""The adaptive draft-length rule, fed with rounds as the loop reports them."""

from __future__ import annotations

from specchat.engine.draft_length import AdaptiveK, FixedK
from specchat.engine.events import DraftedToken, EmittedToken, Round


def _round(accepted: int, drafted: int, draft_s: float, verify_s: float) -> Round:
    tokens = [DraftedToken(i, "x", 0.5, 0.5, i < accepted) for i in range(drafted)]
    kind = "target" if not drafted else ("bonus" if accepted == drafted else "correction")
    return Round(turn=1, index=0, k=drafted, drafted=tokens, emitted=EmittedToken(9, "y", kind, 0.5),
                 draft_time_s=draft_s, verify_time_s=verify_s)


def _cpu_verify_cost(fed: int) -> float:
    # the shape measured on this CPU for SmolLM2 in bf16 (ms): 1→45, 2→64, 4→101, 8→166
    return 0.045 + 0.018 * (fed - 1)


def _run(policy: AdaptiveK, accept_prob_per_position: float, draft_cost: float, rounds: int = 200) -> list[int]:
    chosen = []
    for i in range(rounds):
        k = policy.choose(limit=100)
        chosen.append(k)
        # deterministic acceptance pattern with the given per-position rate
        accepted = 0
        while accepted < k and ((i * 7 + accepted * 3) % 100) < accept_prob_per_position * 100:
            accepted += 1
        policy.observe(_round(accepted, k, draft_cost * k, _cpu_verify_cost(k + 1)))
    return chosen


def test_backs_off_to_plain_decoding_when_drafts_are_rejected():
    chosen = _run(AdaptiveK(max_k=8), accept_prob_per_position=0.0, draft_cost=0.004)
    tail = chosen[50:]
    assert tail.count(0) / len(tail) > 0.9  # only rare probes
    assert max(tail) <= 2


def test_drafts_long_runs_when_a_cheap_drafter_is_usually_right():
    chosen = _run(AdaptiveK(max_k=8), accept_prob_per_position=0.95, draft_cost=0.002)
    assert min(chosen[50:]) >= 3


def test_an_expensive_drafter_is_not_worth_it_even_when_right():
    # drafting costs as much as a target step: speculation cannot pay on this cost curve
    chosen = _run(AdaptiveK(max_k=8), accept_prob_per_position=0.9, draft_cost=0.045)
    assert chosen[50:].count(0) / len(chosen[50:]) > 0.9


def test_fixed_k_respects_the_limit():
    assert FixedK(5).choose(limit=3) == 3 and FixedK(5).choose(limit=9) == 5 and FixedK(2).choose(-1) == 0


def test_alternatives_count_in_the_pass_cost_and_in_acceptance():
    from specchat.engine.events import AlternativeToken

    policy = AdaptiveK(max_k=4, spare=lambda k: max(0, 5 - k))  # fill the pass to 6 tokens
    # Run rejected at position 0, an alternative there accepted: position 0 counts as
    # accepted, and position 1 as not tried (the run's second draft followed the rejected one).
    r = _round(0, 2, 0.004, 0.060)
    r.alternatives = [AlternativeToken(0, 7, "z", 0.3, 0.6, True), AlternativeToken(1, 8, "w", 0.2, 0.1, False),
                      AlternativeToken(0, 5, "v", 0.1, 0.1, False)]
    policy.observe(r)
    assert policy.verify_cost == {6: 0.060}  # keyed by the tokens the pass fed: 1 + 2 + 3
    assert policy.tried == [1.0, 0.0] and policy.accepted == [1.0, 0.0]
    # Every k >= 1 feeds 6 tokens, so its cost is the 6-token pass whatever k is.
    policy.verify_cost[1] = 0.050
    policy.draft_cost = 0.0
    rates = policy.expected_rates(4)
    assert rates[0] == 1 / 0.050
    tokens = [rate * 0.060 for rate in rates[1:]]
    assert all(b > a for a, b in zip(tokens, tokens[1:]))  # more drafted, more expected tokens, same cost
