"""Held-out prompts stay out of the distillation data: the files are sound, no
prompt the distillation makes is near one, and the guard that drops them catches
copies and near-copies."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from specchat.bench.prompts import builtin_prompts, load_prompts
from specchat.distill import sources
from specchat.distill.followups import FOLLOW_UPS, Exchange as FirstTurn, derived_messages
from specchat.distill.heldout import HELDOUT_FILES, HeldOut, default_files, turns_of
from specchat.distill.magpie import STEERS
from specchat.distill.prompts import PROMPT_SETS, make_prompts

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def guard() -> HeldOut:
    return HeldOut.from_files([DOCS / name for name in HELDOUT_FILES], sources.FRAMES)


def test_the_new_held_out_set_covers_every_bench_category():
    counts = Counter(p.category for p in load_prompts(DOCS / "heldout-2-prompts.jsonl"))
    assert set(counts) == {p.category for p in builtin_prompts()}
    assert min(counts.values()) >= 4
    assert default_files() == [DOCS / name for name in HELDOUT_FILES]


def _pool(seed: int) -> sources.Pool:
    """Earlier exchanges made of the distillation's own templated prompts, answered
    with sentences of templated prompts (as the target's answers echo its prompts)."""
    rng = random.Random(seed)
    pool = sources.Pool()
    asked = make_prompts(400, seed, "wide")
    for question in asked:
        answer = " ".join(rng.sample(asked, 4)).replace("\n", " ") + " That is all."
        pool.add(sources.Exchange("wide", [{"role": "user", "content": question}], answer))
    pool.add(sources.Exchange("wide", [{"role": "user", "content": "Translate into French: My dog sleeps."}],
                              "Mon chien dort dans le jardin tous les soirs."))
    return pool


def distillation_prompts() -> list[str]:
    """Every prompt the distillation builds without the target writing it."""
    out = [p for s in PROMPT_SETS for seed in (0, 5) for p in make_prompts(3000, seed, s)]
    out += list(FOLLOW_UPS) + [steer for steers in STEERS.values() for steer in steers]
    pool, rng = _pool(1), random.Random(2)
    for kind in ("summary", "document", "translation", "math", "code", "wide"):
        out += [t for t in (sources.built(kind, rng, pool) for _ in range(300)) if t]
    first = [FirstTurn(e.messages[-1]["content"], e.answer) for e in pool.exchanges]
    out += [m["content"] for _ in range(300) for m in derived_messages(rng, first) if m["role"] == "user"]
    return out


def test_no_distillation_prompt_is_near_a_held_out_one(guard):
    prompts = distillation_prompts()
    assert len(prompts) > 10_000
    near = [p for p in prompts if guard.near(p)]
    assert near == []


@pytest.mark.parametrize("name", HELDOUT_FILES)
def test_the_guard_catches_each_held_out_prompt_copied_or_embedded(guard, name):
    for turn in turns_of(DOCS / name):
        assert guard.near(turn)
        assert guard.near(turn.upper() + "  ")  # normalised: case and spacing do not hide it
        if len(turn.split()) >= 8:  # a short turn ("Why?") inside a longer prompt is no copy
            assert guard.near(f"Here is something I read.\n\n{turn}\n\nWhat do you think?")


def test_the_guard_catches_a_shared_sentence_but_not_a_shared_instruction(guard):
    clinic = [t for t in turns_of(DOCS / "heldout-prompts.jsonl") if "Riverside Clinic" in t][0]
    sentence = clinic.split("Document: ")[1].split(". ")[0]  # one sentence of the held-out document
    assert len(sentence.split()) >= 8
    assert guard.near(f"Summarize this as a bullet list.\n\n{sentence}. Parking is free.")
    # The first held-out set frames its passages with a template's instruction; a new
    # passage under the same instruction is not a near-copy.
    assert guard.near("Give a one-sentence summary of this text.\n\nOur cat sleeps all day long.") is False
    assert HeldOut(["Give a one-sentence summary of this text. Cats."]).near(
        "Give a one-sentence summary of this text. Dogs.")  # without the frames, it would be
