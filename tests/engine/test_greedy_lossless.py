"""Greedy speculation must reproduce the target's own greedy output token for token."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.session import ChatSession, GenerationSettings, end_of_turn_ids

from .helpers import decode_once

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the nth Fibonacci number.",
    "List three colours of the rainbow, then repeat the list in reverse order.",
]
GREEDY = SamplingSettings(temperature=0.0)
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def random_drafter(embedded):
    """A randomly initialised small model with the target's vocabulary: it drafts badly."""
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=embedded.model.config.vocab_size, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True)
    return ModelDrafter(LlamaForCausalLM(cfg).eval(), name="random", vocab_size=cfg.vocab_size)


def _prompt_ids(embedded, text: str) -> list[int]:
    tok = embedded.tokenizer
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    return tok(rendered, add_special_tokens=False)["input_ids"]


def _reference(embedded, prompt: list[int]) -> list[int]:
    """transformers' own greedy decoding of the same target."""
    out = embedded.model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  eos_token_id=sorted(end_of_turn_ids(embedded.model, embedded.tokenizer)))
    ids = out[0, len(prompt):].tolist()
    eos = end_of_turn_ids(embedded.model, embedded.tokenizer)
    return next((ids[: i + 1] for i, t in enumerate(ids) if t in eos), ids)


@pytest.mark.parametrize("text", PROMPTS)
def test_every_drafter_reproduces_target_greedy(embedded, random_drafter, text):
    prompt = _prompt_ids(embedded, text)
    expected = _reference(embedded, prompt)
    eos = end_of_turn_ids(embedded.model, embedded.tokenizer)
    target_as_drafter = ModelDrafter(embedded.model, name="self", vocab_size=49152)
    for drafter, k in [(NoDrafter(), 0), (NgramDrafter(), 4), (target_as_drafter, 4), (random_drafter, 3)]:
        state, rounds, _ = decode_once(embedded.model, embedded.tokenizer, drafter, prompt, k=k,
                                       new_tokens=NEW_TOKENS, sampling=GREEDY, eos_ids=eos)
        assert state.generated == expected, f"{drafter.name} diverged from the target's greedy output"
        assert "".join(r.text for r in rounds) == state.text


def test_target_as_its_own_drafter_accepts_everything(embedded):
    prompt = _prompt_ids(embedded, PROMPTS[1])
    drafter = ModelDrafter(embedded.model, name="self", vocab_size=49152)
    _, rounds, _ = decode_once(embedded.model, embedded.tokenizer, drafter, prompt, k=4,
                               new_tokens=NEW_TOKENS, sampling=GREEDY)
    drafted = sum(len(r.drafted) for r in rounds)
    assert drafted > 0 and all(t.accepted for r in rounds for t in r.drafted)
    assert all(r.emitted is None or r.emitted.kind == "bonus" for r in rounds)


def test_random_drafter_is_mostly_rejected_but_output_is_unchanged(embedded, random_drafter):
    prompt = _prompt_ids(embedded, PROMPTS[0])
    state, rounds, _ = decode_once(embedded.model, embedded.tokenizer, random_drafter, prompt, k=3,
                                   new_tokens=NEW_TOKENS, sampling=GREEDY,
                                   eos_ids=end_of_turn_ids(embedded.model, embedded.tokenizer))
    drafted = sum(len(r.drafted) for r in rounds)
    accepted = sum(r.n_accepted for r in rounds)
    # a model drafter always fills k (only the end of the answer caps it below 3)
    assert all(len(r.drafted) == r.k for r in rounds) and sum(r.k == 3 for r in rounds) >= len(rounds) - 3
    assert accepted / drafted < 0.2
    assert any(r.emitted.kind == "correction" for r in rounds if r.emitted)
    assert state.generated == _reference(embedded, prompt)


def test_session_with_adaptive_k_matches_plain_decoding(embedded):
    """The whole chat path (template, prefill, adaptive k) is lossless too."""
    answers = []
    for drafter in (NoDrafter(), NgramDrafter(), ModelDrafter(embedded.model, name="self", vocab_size=49152)):
        session = ChatSession(embedded, drafter, settings=GenerationSettings(max_new_tokens=30))
        answers.append([list(session.send(p))[-1].text for p in PROMPTS[:2]])
    assert answers[0] == answers[1] == answers[2]
