"""The training prompt set: templated prompts that do not run out, and prompts built
on the target's earlier answers."""

from __future__ import annotations

import hashlib
import random

import pytest

from specchat.distill.datagen import DataSettings, batch_layout
from specchat.distill.followups import (DOCUMENT_ASKS, FOLLOW_UPS, SUMMARY_ASKS, Exchange, as_document,
                                        derived_messages)
from specchat.distill.prompts import PROMPT_SETS, make_prompts


@pytest.mark.parametrize("prompt_set", PROMPT_SETS)
def test_prompts_are_distinct_reproducible_and_prefix_stable(prompt_set):
    prompts = make_prompts(3000, 1, prompt_set)
    assert len(set(prompts)) == 3000
    assert make_prompts(3000, 1, prompt_set) == prompts
    assert make_prompts(1000, 1, prompt_set) == prompts[:1000]  # a bigger run extends a smaller one
    assert make_prompts(100, 2, prompt_set) != prompts[:100]


def test_the_templated_set_is_still_the_one_the_shipped_drafter_was_trained_on():
    # provenance.json's command reproduces the shipped data only while these stay the same.
    shipped = make_prompts(2432, 0)
    assert hashlib.sha256("\n".join(shipped).encode()).hexdigest() == \
        "ad7b333df3e2c0ad1499da06b5d5452a8f766312e938833a9a43baca1bea8c38"


def test_the_wide_set_does_not_run_out_of_translations():
    # Twelve fixed sentences cap the templated set at 90 distinct translation prompts,
    # so past its first ~2,000 it holds none.
    assert not any(p.startswith("Translate") for p in make_prompts(4864)[2432:])
    translations = [p for p in make_prompts(4864, 0, "wide")[2432:] if p.startswith("Translate")]
    assert len(translations) > 200
    assert sum(p.startswith("Translate into English") for p in translations) > 40


def test_an_unknown_prompt_set_is_refused():
    with pytest.raises(ValueError, match="unknown prompt set 'huge'"):
        make_prompts(3, 0, "huge")


def test_as_document_drops_a_sentence_cut_off_by_the_token_limit():
    assert as_document("Bees make honey. They live in hives. The queen lays") == \
        "Bees make honey. They live in hives."
    assert as_document("  Bees make honey. They live in hives.  ") == "Bees make honey. They live in hives."
    # Nothing to cut back to, or only a short start left: kept whole.
    assert as_document("a list without an end") == "a list without an end"
    assert as_document("Yes. Bees make honey in hives and store it for the winter") == \
        "Yes. Bees make honey in hives and store it for the winter"


EARLIER = [Exchange(f"Question {i}?", f"Answer {i} has a first sentence. " * 12 + "And a cut-off")
           for i in range(6)]


def test_derived_prompts_are_built_on_earlier_answers_in_three_ways():
    rng = random.Random(0)
    seen = set()
    for _ in range(60):
        messages = derived_messages(rng, EARLIER)
        assert messages[-1]["role"] == "user"
        if len(messages) == 3:  # a second turn after an earlier exchange
            first = next(e for e in EARLIER if e.question == messages[0]["content"])
            assert messages[1] == {"role": "assistant", "content": first.answer.strip()}
            assert messages[2]["content"] in FOLLOW_UPS
            seen.add("follow-up")
            continue
        ask, _, rest = messages[0]["content"].partition("\n\n")
        if ask in SUMMARY_ASKS:
            assert rest in {as_document(e.answer) for e in EARLIER}
            seen.add("summary")
        else:
            assert ask in DOCUMENT_ASKS
            docs, _, question = rest.rpartition("\n\nQuestion: ")
            answered = next(e for e in EARLIER if e.question == question)
            assert as_document(answered.answer) in docs  # the question's own answer is among them
            assert "cut-off" not in docs
            seen.add("documents")
    assert seen == {"follow-up", "summary", "documents"}
    assert derived_messages(random.Random(5), EARLIER) == derived_messages(random.Random(5), EARLIER)


def test_the_first_batch_is_all_templated_and_later_ones_carry_the_derived_share():
    layout = batch_layout(DataSettings(prompts=150, batch_size=64, derived_share=0.375))
    assert layout == [(64, 0), (64, 24), (22, 8)]
    assert batch_layout(DataSettings(prompts=150, batch_size=64, derived_share=0.0)) == [(64, 0), (64, 0), (22, 0)]
