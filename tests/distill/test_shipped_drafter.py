"""The shipped drafter with the real embedded target and the real engine."""

from __future__ import annotations

import json

import pytest
import torch

from specchat.distill.datagen import chat_ids
from specchat.engine.drafters.loading import load_trained_drafter, weights_dir
from specchat.engine.loop.events import Round, TurnEnd
from specchat.engine.loop.session import ChatSession, GenerationSettings, end_of_turn_ids

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the nth Fibonacci number.",
    "Translate into Spanish: The library closes early on Fridays.",
]
NEW_TOKENS = 48


@pytest.fixture(scope="module")
def smoldraft(embedded):
    return load_trained_drafter(embedded)


def test_shipped_files_are_small_and_say_how_they_were_made():
    directory = weights_dir()
    size = sum(f.stat().st_size for f in directory.iterdir())
    assert size < 30 * 2**20
    prov = json.loads((directory / "provenance.json").read_text())
    assert prov["command"].startswith("specchat distill")
    assert {"seed", "data_settings", "train_settings", "data"} <= prov.keys()


def _reference(embedded, prompt: list[int]) -> list[int]:
    eos = end_of_turn_ids(embedded.model, embedded.tokenizer)
    out = embedded.model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  eos_token_id=sorted(eos))
    ids = out[0, len(prompt):].tolist()
    return next((ids[: i + 1] for i, t in enumerate(ids) if t in eos), ids)


@pytest.mark.slow
@pytest.mark.parametrize("k", [4, None], ids=["k4", "auto"])  # auto: runs cut where it is unsure
@pytest.mark.parametrize("text", PROMPTS)
def test_speculation_with_it_is_the_target_greedy_output(embedded, smoldraft, text, k):
    smoldraft.reset()
    session = ChatSession(embedded, smoldraft, settings=GenerationSettings(k=k, max_new_tokens=NEW_TOKENS))
    events = list(session.send(text))
    assert isinstance(events[-1], TurnEnd) and events[-1].finish_reason in ("eos", "length")
    rounds = [e for e in events if isinstance(e, Round)]
    ids: list[int] = []
    for r in rounds:
        ids += [t.token_id for t in r.accepted] + ([r.emitted.token_id] if r.emitted else [])
    expected = _reference(embedded, chat_ids(embedded.tokenizer, text))
    assert ids == expected
    # Drafts are target ids: the model's from its subset, copies from the context.
    vocab = set(smoldraft.model.vocab_ids.tolist())
    context = set(chat_ids(embedded.tokenizer, text)) | set(ids)
    assert all(t.token_id in vocab or t.token_id in context for r in rounds for t in r.drafted)


@pytest.mark.slow
def test_it_drafts_better_than_its_untrained_start(embedded, smoldraft):
    # A drafter whose files were mis-mapped or mis-loaded does no better than the
    # network it was initialised as; the trained one must do clearly better.
    from specchat.distill.train import init_from_target
    from specchat.engine.drafters.trained import TrainedDrafter

    prov = json.loads((weights_dir() / "provenance.json").read_text())
    untrained = TrainedDrafter(init_from_target(embedded.model, smoldraft.model.cfg,
                                                smoldraft.model.vocab_ids.tolist(),
                                                prov["train_settings"]["norm_scale"]).eval(), "untrained")
    rates = []
    for drafter in (smoldraft, untrained):
        session = ChatSession(embedded, drafter, settings=GenerationSettings(k=4, max_new_tokens=64))
        rates.append(list(session.send("Explain photosynthesis in simple terms."))[-1].totals.acceptance_rate)
    assert rates[0] > 2 * rates[1] + 0.03, rates
