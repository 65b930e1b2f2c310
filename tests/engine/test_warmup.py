"""Warm-up timings, the saved calibration and the speedup estimate: what a fresh
session starts from, on real (tiny) models."""

from __future__ import annotations

import json

import pytest

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.events import (DraftedToken, EmittedToken, Round, TurnEnd, TurnStart, estimated_speedup,
                                         event_from_json, to_json)
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.engine.policy.calibration import BUCKETS, Calibration, SEED_WEIGHT, read_calibration, write_calibration
from specchat.engine.policy.costs import StepCosts
from specchat.engine.policy.draft_length import AdaptiveK
from specchat.engine.policy.warmup import measure_costs

from .helpers import as_target, word_tokenizer


@pytest.fixture
def pair(tiny_llama):
    target = as_target(tiny_llama(vocab_size=64, seed=0), word_tokenizer(64))
    return target, ModelDrafter(tiny_llama(vocab_size=64, seed=1, layers=1), name="tiny-draft", vocab_size=64)


def test_warm_up_times_every_pass_size_the_rule_uses_and_seeds_it(pair):
    target, drafter = pair
    session = ChatSession(target, drafter, settings=GenerationSettings(k=None, max_k=5, max_new_tokens=6))
    costs = session.warm_up()
    # Every verify width from a plain step to max_k drafts plus the last token.
    assert set(range(1, 7)) <= set(costs.verify_s) and all(t > 0 for t in costs.verify_s.values())
    assert costs.plain_step_s > 0 and costs.draft_s["tiny-draft"] > 0
    # The warm-up's context is gone: the drafter and the session hold nothing of it.
    assert drafter._cached == [] and session._cached == []

    rule = session._policy_for_turn()
    assert isinstance(rule, AdaptiveK)
    assert rule.verify_cost == costs.verify_s and rule.verify_cost is not costs.verify_s
    assert rule.draft_cost == costs.draft_s["tiny-draft"]
    assert rule.first_k == 5  # measured costs: no guess holds the first rounds back
    assert rule.choose(8) == 2  # but an answer's runs start two drafts long (they lengthen as they hold)
    assert AdaptiveK(max_k=5).choose(8) == 2  # unmeasured, it starts short

    # The turn that follows tells the front ends the plain step its estimate uses.
    measured = costs.plain_step_s
    start = next(session.send("t1 t2 t3"))
    assert isinstance(start, TurnStart) and start.plain_step_s == measured


def test_without_a_drafter_only_the_plain_step_is_warmed(pair):
    target, _ = pair
    costs = measure_costs(target, NoDrafter(), max_k=8)
    assert set(costs.verify_s) == {1} and costs.draft_s == {} and costs.plain_step_s > 0


def test_plain_rounds_of_the_conversation_keep_the_plain_step_current(pair):
    target, _ = pair
    session = ChatSession(target, NoDrafter(), settings=GenerationSettings(max_new_tokens=8))
    session.costs.plain_step_s = 10.0  # far from what a tiny model's step costs
    events = list(session.send("t1 t2"))
    rounds = [e for e in events if isinstance(e, Round)]
    assert len(rounds) == 8
    assert 0 < session.costs.plain_step_s < 10.0 * (1 - 0.05) ** 7
    # each round carries the figure as it stood after it, so the estimate follows the
    # turn's own plain rounds (the chat screen's load included), and so does the end
    carried = [r.plain_step_s for r in rounds]
    assert carried == sorted(carried, reverse=True) and carried[-1] == session.costs.plain_step_s
    assert events[-1].plain_step_s == session.costs.plain_step_s


def test_a_saved_calibration_seeds_the_rule_with_its_rates_and_a_capped_weight(tmp_path):
    measured = Calibration()
    for _ in range(200):
        measured.add(0.95, True)
    for _ in range(60):
        measured.add(0.15, False)
    measured.add(1.0, True)
    write_calibration(tmp_path, measured, {"prompts": 1})
    loaded = read_calibration(tmp_path)
    assert loaded == measured
    rule = AdaptiveK.seeded(8, None, "d", loaded)
    # Rates as measured (up to the prior's two observations), counts capped.
    assert rule.calibration.rate(0.95) > 0.9 and rule.calibration.rate(0.15) < 0.1
    assert max(rule.calibration.tried) == pytest.approx(SEED_WEIGHT)
    assert rule.calibration.tried[BUCKETS] == 1.0  # the copy bucket, below the cap, kept whole
    assert AdaptiveK().calibration.rate(0.15) == pytest.approx(0.15)  # uncalibrated: the drafter's own p


@pytest.mark.parametrize("content, fragment", [
    (None, "is missing"),
    ("{not json", "unreadable"),
    (json.dumps({"format": 1, "tried": [1.0], "accepted": [1.0]}), "accepted <= tried"),
    (json.dumps({"format": 1, "tried": [1.0] * (BUCKETS + 1), "accepted": [2.0] * (BUCKETS + 1)}),
     "accepted <= tried"),
    (json.dumps({"format": 99}), "format 99"),
])
def test_a_missing_or_corrupt_calibration_is_a_one_line_warning_and_a_cold_start(tmp_path, embedded, content,
                                                                                 fragment):
    import shutil

    from specchat.engine.drafters.loading import load_trained_drafter, weights_dir

    directory = tmp_path / "smoldraft"
    shutil.copytree(weights_dir("smoldraft"), directory)
    (directory / "calibration.json").unlink(missing_ok=True)
    if content is not None:
        (directory / "calibration.json").write_text(content)
    drafter = load_trained_drafter(embedded, directory, name="copy")
    assert drafter.calibration is None
    assert len(drafter.load_notes) == 1 and "\n" not in drafter.load_notes[0]
    assert fragment in drafter.load_notes[0] and "starts uncalibrated" in drafter.load_notes[0]
    session = ChatSession(embedded, drafter, settings=GenerationSettings(max_new_tokens=4))
    assert session._policy_for_turn().calibration == Calibration()  # cold: the priors
    assert list(session.send("Hi"))[-1].finish_reason in ("length", "eos")


def test_the_shipped_drafter_loads_its_calibration(embedded):
    from specchat.engine.drafters.loading import load_trained_drafter

    drafter = load_trained_drafter(embedded)
    assert drafter.calibration is not None and drafter.load_notes == ()
    assert sum(drafter.calibration.tried) > 500  # measured on dozens of answers


def _round(index: int, drafted: int, accepted: int, seconds: float) -> Round:
    from specchat.engine.loop.events import DraftedToken, EmittedToken

    tokens = [DraftedToken(token_id=1, text="a", p=0.5, q=0.5, accepted=i < accepted) for i in range(drafted)]
    return Round(turn=1, index=index, k=drafted, drafted=tokens,
                 emitted=EmittedToken(token_id=2, text="b", kind="correction", q=0.9),
                 draft_time_s=seconds / 4, verify_time_s=3 * seconds / 4)


def test_the_estimate_from_a_recorded_trace_is_tokens_times_the_plain_step_over_the_round_time():
    from specchat.engine.loop.events import Totals

    rounds = [_round(0, 3, 2, 0.05), _round(1, 4, 4, 0.06), _round(2, 0, 0, 0.02)]
    trace = [to_json(e) for e in rounds]  # as written to a trace file, and read back
    totals = Totals()
    for line in trace:
        totals.add_round(event_from_json(line))
    # 3 + 5 + 1 tokens; each would have cost a 20 ms plain step; the rounds took 130 ms.
    assert totals.tokens == 9
    assert estimated_speedup(totals, 0.020) == pytest.approx(9 * 0.020 / 0.13)
    assert estimated_speedup(totals, None) is None and estimated_speedup(Totals(), 0.02) is None

    from specchat.oneshot import result_json, stats_line

    start = TurnStart(turn=1, target="t", drafter="d", device="cpu", k="auto", temperature=0.0, top_p=1.0,
                      top_k=0, max_new_tokens=9, prompt_tokens=3, reused_tokens=0, prefill_time_s=0.0,
                      plain_step_s=0.020)
    end = TurnEnd(turn=1, finish_reason="length", text="", totals=totals)
    assert result_json(start, end)["stats"]["speedup_estimate"] == pytest.approx(9 * 0.020 / 0.13)
    assert f"speedup ≈{9 * 0.020 / 0.13:.2f}× (estimate" in stats_line(start, end)
    # the plain step as the turn's end knew it, where the session says
    end.plain_step_s = 0.026
    assert result_json(start, end)["stats"]["speedup_estimate"] == pytest.approx(9 * 0.026 / 0.13)
    assert result_json(start, end)["stats"]["plain_step_s"] == 0.026
    assert "plain step 26.0 ms" in stats_line(start, end)


def test_verify_passes_keep_the_plain_step_current_where_no_plain_round_runs():
    # Warm-up: a plain step of 3 ms, a 3-token pass of 3.6. After a long document
    # attention costs 1.5 ms more a row: a 3-token pass takes 3.6 + 4.5 ms.
    costs = StepCosts(verify_s={1: 0.0030, 3: 0.0036}, plain_step_s=0.003, warm_plain_step_s=0.003)
    drafted = [DraftedToken(1, "a", 0.5, 0.5, True), DraftedToken(2, "b", 0.5, 0.5, False)]
    for _ in range(200):
        costs.observe(Round(turn=1, index=0, k=2, drafted=drafted, emitted=EmittedToken(3, "c", "correction", 0.5),
                            draft_time_s=0.0003, verify_time_s=0.0081))
    assert abs(costs.plain_step_s - 0.0045) < 1e-6
    # a pass size the warm-up never timed says nothing
    before = costs.plain_step_s
    costs.observe(Round(turn=1, index=0, k=1, drafted=drafted[:1], emitted=EmittedToken(3, "c", "bonus", 0.5),
                        draft_time_s=0.0003, verify_time_s=0.1))
    assert costs.plain_step_s == before
