"""The adaptive draft-length rule, fed with rounds as the loop reports them."""

from __future__ import annotations

from specchat.engine.drafters.protocol import Alternative, choose_alternatives
from specchat.engine.loop.events import AlternativeToken, DraftedToken, EmittedToken, Round
from specchat.engine.policy.draft_length import AdaptiveK, Calibration, FixedK


def _round(accepted: int, ps: list[float], draft_s: float, verify_s: float, k: int | None = None,
           unverified: int = 0) -> Round:
    tokens = [DraftedToken(i, "x", p, 0.5, i < accepted) for i, p in enumerate(ps)]
    kind = "target" if not ps else ("bonus" if accepted == len(ps) else "correction")
    return Round(turn=1, index=0, k=len(ps) if k is None else k, drafted=tokens,
                 emitted=EmittedToken(9, "y", kind, 0.5), draft_time_s=draft_s, verify_time_s=verify_s,
                 unverified=unverified)


def _cpu_verify_cost(fed: int) -> float:
    # the shape measured on this CPU for SmolLM2 in bf16 (ms): 1→45, 2→64, 4→101, 8→166
    return 0.045 + 0.018 * (fed - 1)


def _run(policy: AdaptiveK, p: float, accept_prob: float, draft_cost: float,
         rounds: int = 200) -> list[tuple[int, int]]:
    """Rounds as the loop runs them, with a drafter whose every draft has probability
    p and is accepted at the given rate; (cap chosen, drafts verified) per round."""
    out = []
    for i in range(rounds):
        k = policy.choose(limit=100)
        ps: list[float] = []
        while len(ps) < k:  # as a drafter asks after each token
            ps.append(p)
            if not policy.draft_more(ps):
                break
        n, _ = policy.submit(ps)
        accepted = 0  # a deterministic pattern with the given acceptance rate
        while accepted < n and ((i * 7 + accepted * 3) % 100) < accept_prob * 100:
            accepted += 1
        policy.observe(_round(accepted, ps[:n], draft_cost * len(ps), _cpu_verify_cost(n + 1), k=k,
                              unverified=len(ps) - n))
        out.append((k, n))
    return out


def test_backs_off_to_plain_decoding_when_drafts_are_rejected():
    # The drafter is sure of itself and always wrong: the calibration learns it, so
    # nothing is verified, and the drafting that buys nothing stops too.
    tail = _run(AdaptiveK(max_k=8), p=0.95, accept_prob=0.0, draft_cost=0.004)[50:]
    assert [k for k, _ in tail].count(0) / len(tail) > 0.9  # only rare probes
    assert max(n for _, n in tail) <= 1


def test_drafts_long_runs_when_a_cheap_drafter_is_usually_right():
    rounds = _run(AdaptiveK(max_k=8), p=0.95, accept_prob=0.95, draft_cost=0.002)
    assert min(n for _, n in rounds[50:]) >= 3


def test_an_expensive_drafter_is_not_worth_it_even_when_right():
    # drafting costs as much as a target step: speculation cannot pay on this cost curve
    tail = _run(AdaptiveK(max_k=8), p=0.95, accept_prob=0.9, draft_cost=0.045)[50:]
    assert [k for k, _ in tail].count(0) / len(tail) > 0.9


def test_fixed_k_respects_the_limit_and_verifies_every_draft():
    assert FixedK(5).choose(limit=3) == 3 and FixedK(5).choose(limit=9) == 5 and FixedK(2).choose(-1) == 0
    assert FixedK(4).draft_more([0.01]) and FixedK(4).submit([0.01, 0.01]) == (2, [])
    beside = [Alternative(0, 7, 0.3), Alternative(1, 8, 0.2), Alternative(2, 9, 0.9)]
    # its run is verified whole, with the alternatives beside it that fit (none past the run)
    assert FixedK(4).submit([0.5, 0.5], beside, spare=lambda n: 5) == (2, beside[:2])
    assert FixedK(4).submit([0.5, 0.5], beside, spare=lambda n: 1) == (2, beside[:1])


def _calibrated() -> AdaptiveK:
    """A policy that has seen confident drafts (p 0.95) accepted, unsure ones (p 0.15)
    rejected and lookup copies (p 1) accepted half the time, on the bf16 cost curve."""
    policy = AdaptiveK(max_k=8)
    for fed in range(1, 10):
        policy.verify_cost[fed] = _cpu_verify_cost(fed)
    for i in range(40):
        policy.observe(_round(2, [0.95, 0.95, 0.15], 0.003, _cpu_verify_cost(4)))
        policy.observe(_round(i % 2, [1.0], 0.001, _cpu_verify_cost(2)))
    return policy


def test_calibration_is_measured_by_the_drafters_probability_with_copies_apart():
    cal = _calibrated().calibration
    assert cal.rate(0.95) > 0.9 and cal.rate(0.15) < 0.1
    assert 0.4 < cal.rate(1.0) < 0.6
    # Unmeasured probabilities keep the drafter's own word.
    assert abs(Calibration().rate(0.55) - 0.55) < 1e-9 and cal.rate(0.55) == Calibration().rate(0.55)


def test_a_run_is_cut_where_the_drafter_is_unsure():
    policy = _calibrated()
    # Each verified token costs a fifth of a step here: the unlikely third draft and
    # whatever follows it are not worth verifying.
    assert policy.submit([0.95, 0.95, 0.15, 0.95, 0.95]) == (2, [])
    assert policy.submit([0.15, 0.95]) == (0, [])  # a plain step
    assert policy.draft_more([0.95, 0.95]) and not policy.draft_more([0.95, 0.95, 0.15])
    # Where a wider pass costs nothing more, verifying every draft is best.
    flat = _calibrated()
    flat.verify_cost = {fed: 0.045 for fed in range(1, 10)}
    assert flat.submit([0.95, 0.95, 0.15, 0.95, 0.95]) == (5, [])


def test_drafting_resumes_after_a_probe_finds_predictable_text():
    policy = AdaptiveK(max_k=8)
    for _ in range(60):  # wrong drafts: drafting stops
        k = policy.choose(limit=100)
        policy.observe(_round(0, [0.5] * min(k, 2), 0.002 * k, _cpu_verify_cost(min(k, 2) + 1), k=k))
    assert policy.choose(limit=100) == 0
    caps = []
    for _ in range(80):  # now every draft holds: the next probe turns drafting back on
        k = policy.choose(limit=100)
        caps.append(k)
        n = min(k, 4)
        policy.observe(_round(n, [0.95] * n, 0.002 * n, _cpu_verify_cost(n + 1), k=k))
    assert all(k > 0 for k in caps[-10:])


def test_alternatives_count_in_the_pass_cost_and_are_calibrated_where_their_draft_failed():
    policy = AdaptiveK(max_k=4)
    r = _round(0, [0.5, 0.5], 0.004, 0.060)
    r.alternatives = [AlternativeToken(0, 7, "z", 0.3, 0.6, True), AlternativeToken(1, 8, "w", 0.2, 0.1, False),
                      AlternativeToken(0, 5, "v", 0.1, 0.1, False)]
    policy.observe(r)
    assert policy.verify_cost == {6: 0.060}  # keyed by the tokens the pass fed: 1 + 2 + 3
    # Position 0's draft failed: its two alternatives were judged; position 1 was never reached.
    assert policy.alternative_calibration.tried[3] == 1.0 and policy.alternative_calibration.accepted[3] == 1.0
    assert policy.alternative_calibration.tried[1] == 1.0 and policy.alternative_calibration.tried[2] == 0.0
    assert policy.calibration.tried[5] == 1.0 and policy.calibration.accepted[5] == 0.0


def _fill_to_6(n: int) -> int:  # alternatives that fill the pass to 6 tokens
    return max(0, 5 - n)


def _alternatives_policy(verify_cost) -> AdaptiveK:
    policy = AdaptiveK(max_k=4, draft_cost=0.0)
    policy.verify_cost = {fed: verify_cost(fed) for fed in range(1, 10)}
    for i in range(40):  # drafts at p 0.5 hold half the time; when not, an alternative is right 1 in 5
        r = _round(0, [0.5], 0.0, verify_cost(3))
        r.alternatives = [AlternativeToken(0, 7, "z", 0.35, 0.6, i % 5 == 0), AlternativeToken(0, 8, "w", 0.15, 0.1, False)]
        policy.observe(r)
        policy.observe(_round(1, [0.5], 0.0, verify_cost(2)))
    return policy


def test_alternatives_are_verified_when_their_worth_beats_their_cost():
    candidates = [Alternative(0, 7, 0.35), Alternative(0, 8, 0.15), Alternative(1, 9, 0.35)]
    # A wider pass costs nothing more: the run and the alternatives beside it.
    free = _alternatives_policy(lambda fed: 0.045)
    assert free.submit([0.5, 0.5], candidates, _fill_to_6) == (2, choose_alternatives(candidates, [0.5, 0.5], 3))
    # Each token fed costs 40% of a step: one right a tenth of the time is not worth it.
    steep = _alternatives_policy(lambda fed: 0.045 + 0.018 * (fed - 1))
    assert steep.submit([0.5, 0.5], candidates, _fill_to_6)[1] == []
    # A token costs 4% of a step: only the alternative measured right 1 time in 5 at
    # the first draft pays its way; one never right does not, nor does its like at the
    # second draft, which is needed only when the first draft holds (half the worth).
    gentle = _alternatives_policy(lambda fed: 0.045 + 0.002 * (fed - 1))
    assert gentle.submit([0.5, 0.5], candidates, _fill_to_6) == (2, [candidates[0]])


def _costly_rows(fed: int) -> float:
    # the 2-core EPYC's shape (ms): a step 2.5, each further token fed ~0.3
    return 0.0025 + 0.0003 * (fed - 1)


def _measured(policy: AdaptiveK) -> AdaptiveK:
    policy.verify_cost = {fed: _costly_rows(fed) for fed in range(1, 10)}
    policy.draft_cost = 0.0003
    return policy


def test_drafting_goes_on_through_early_rejections_where_drafts_pay_on_average():
    # A first draft here must hold a quarter of the time to pay (its drafting and its
    # row); these hold 2 times in 5, after six rejections in a row. The rule of stop 32
    # stopped after two of them, and a 64-token answer then ran almost all plain.
    policy = _measured(AdaptiveK(max_k=8))
    held = [False] * 6 + [i % 5 < 2 for i in range(60)]
    caps = []
    for ok in held:
        k = policy.choose(limit=100)
        caps.append(k)
        if k:
            policy.observe(_round(int(ok), [0.4], 0.0003, _costly_rows(2), k=k))
        else:
            policy.observe(_round(0, [], 0.0, _costly_rows(1), k=0))
    assert sum(k > 0 for k in caps) / len(caps) > 0.9


def test_runs_start_short_and_lengthen_while_they_hold():
    policy = _measured(AdaptiveK(max_k=8))
    assert policy.choose(limit=100) == 2  # an answer's first rounds
    for expected in (3, 4, 5):  # each run of the cap's length that holds whole
        policy.observe(_round(expected - 1, [0.99] * (expected - 1), 0.0003, _costly_rows(expected), k=8))
        assert policy.choose(limit=100) == expected
    policy.observe(_round(0, [0.99], 0.0003, _costly_rows(2), k=8))  # a rejected first draft
    assert policy.choose(limit=100) == 4
    policy.new_answer()
    assert policy.choose(limit=100) == 2


def test_an_answer_the_drafter_could_not_follow_does_not_stop_drafting_in_the_next():
    policy = _measured(AdaptiveK(max_k=8))
    for _ in range(40):
        k = policy.choose(limit=100)
        policy.observe(_round(0, [0.4] if k else [], 0.0003 if k else 0.0, _costly_rows(2 if k else 1), k=k))
    assert policy.choose(limit=100) == 0
    policy.new_answer()
    assert policy.choose(limit=100) > 0


def test_a_held_probe_starts_drafting_again_at_once():
    policy = _measured(AdaptiveK(max_k=8))
    for _ in range(40):  # drafting stops; a probe comes 4 plain rounds later
        k = policy.choose(limit=100)
        policy.observe(_round(0, [0.4] if k else [], 0.0003 if k else 0.0, _costly_rows(2 if k else 1), k=k))
    while (k := policy.choose(limit=100)) == 0:
        policy.observe(_round(0, [], 0.0, _costly_rows(1), k=0))
    policy.observe(_round(1, [0.4], 0.0003, _costly_rows(2), k=k))  # the probe's draft holds
    assert policy.choose(limit=100) > 0


def test_a_catch_up_after_plain_rounds_and_a_stalled_pass_do_not_make_drafting_look_dear():
    policy = _measured(AdaptiveK(max_k=8))
    # 16 tokens fed before the first draft: a cost paid once, when drafting resumed
    policy.observe(_round(0, [0.4], 0.0015, _costly_rows(2), k=8), catchup_tokens=16)
    assert policy.draft_cost == 0.0003
    # a pass that stalled 4x moves its size's cost as one 1.5x slower would
    policy.observe(_round(0, [0.4], 0.0003, 4 * _costly_rows(2), k=8), catchup_tokens=1)
    assert abs(policy.verify_cost[2] - _costly_rows(2) * (1 + 0.2 * 0.5)) < 1e-12


def test_a_stalled_measurement_of_one_pass_size_does_not_price_drafting_out():
    # The chat screen starting up during warm-up once timed 2-token passes at 13.8 ms
    # against 3.2 for 3 tokens: drafting then looked 4x its worth and never ran.
    policy = _measured(AdaptiveK(max_k=8))
    policy.verify_cost[2] = 0.0138
    assert policy._verify_time(2) == _costly_rows(3)  # no dearer than a wider pass
    assert policy.choose(limit=100) > 0
    policy.observe(_round(1, [0.4], 0.0003, _costly_rows(2), k=2))  # a fall is followed in full
    assert abs(policy.verify_cost[2] - (0.0138 + 0.2 * (_costly_rows(2) - 0.0138))) < 1e-12
