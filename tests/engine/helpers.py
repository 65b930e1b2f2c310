"""Small builders shared by the engine tests (real models, no stand-ins)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.sampling import SamplingSettings, logits_to_probs
from specchat.engine.loop.speculative import DecodeState, SpeculativeDecoder, StopRules, prefill
from specchat.engine.model.forward import new_cache
from specchat.engine.policy.draft_length import FixedK


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A tokenizer whose tokens are the words t0..t{n-1}, for tiny-vocabulary models."""
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def as_target(model, tokenizer, name: str = "tiny") -> SimpleNamespace:
    """What ChatSession needs of a loaded model."""
    return SimpleNamespace(model=model, tokenizer=tokenizer, name=name, device=model.device)


def decode_once(model, tokenizer, drafter, prompt: list[int], *, k: int, new_tokens: int,
                sampling: SamplingSettings, generator: torch.Generator | None = None,
                eos_ids=frozenset(), spare: int = 0, policy=None) -> tuple[DecodeState, list, SpeculativeDecoder]:
    """Run the speculative loop on a bare prompt (no chat template); `spare`
    alternatives are asked for beside every run (greedy rounds). The draft length is
    k every round unless a `policy` (policy/draft_length.py) is given."""
    cache, cached = new_cache(model), []
    drafter.reset()
    prefill(model, cache, cached, drafter, prompt)
    decoder = SpeculativeDecoder(model, cache, cached, drafter, IncrementalDecoder(tokenizer), sampling,
                                 policy or FixedK(k), StopRules(eos_ids=eos_ids, max_new_tokens=new_tokens),
                                 generator, threading.Event(), spare=lambda k: spare)
    state = DecodeState(tokens=list(prompt), prompt_len=len(prompt))
    rounds = list(decoder.run(state, turn=1))
    return state, rounds, decoder


def total_variation(counts: torch.Tensor, exact: torch.Tensor) -> float:
    return 0.5 * float((counts / counts.sum() - exact).abs().sum())


def exact_two_token_marginals(model, prompt, settings, next_logits=None):
    """P(t1) and P(t2) under the target with the given sampling settings, enumerated.
    next_logits(ids) -> the logits after ids; default: transformers' forward of `model`
    over the whole sequence, no cache."""
    with torch.inference_mode():
        if next_logits is None:
            first = logits_to_probs(model(torch.tensor([prompt])).logits[0, -1], settings)
            batch = torch.tensor([prompt + [t] for t in range(first.numel())])
            second_given = logits_to_probs(model(batch).logits[:, -1], settings)
        else:
            first = logits_to_probs(next_logits(prompt), settings)
            second_given = torch.stack([logits_to_probs(next_logits(prompt + [t]), settings)
                                        for t in range(first.numel())])
    return first, first @ second_given


def sampled_marginals(target, drafter, tokenizer, prompt, settings, n, policy=None, lengths=None, pairs=None,
                      new_tokens: int = 3, seed: int = 1234):
    """Counts of the first and second generated token over n runs; `policy()` makes
    each run's draft-length policy (else 2 drafts a round), `lengths` collects
    how many drafts each first round verified, and `pairs` whether the second
    token repeated the first."""
    first = torch.zeros(target.config.vocab_size)
    second = torch.zeros_like(first)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        state, rounds, _ = decode_once(target, tokenizer, drafter, prompt, k=2, new_tokens=new_tokens,
                                       sampling=settings, generator=gen, policy=policy() if policy else None)
        if lengths is not None:
            lengths.append(len(rounds[0].drafted))
        first[state.generated[0]] += 1
        second[state.generated[1]] += 1
        if pairs is not None:
            pairs.append(state.generated[0] == state.generated[1])
    return first, second


def assert_greedy_lossless_with_every_drafter(target, small_model, prompt: list[int], vocab: int, label: str) -> None:
    """Greedy speculation on `target` gives its plain greedy output with every drafter
    kind: ngram, `small_model` (with and without alternatives) and the target drafting
    for itself, which has every draft accepted."""
    greedy = SamplingSettings(temperature=0.0)
    tokenizer = word_tokenizer(vocab)
    plain, _, _ = decode_once(target, tokenizer, NoDrafter(), prompt, k=0, new_tokens=24, sampling=greedy)
    small = ModelDrafter(small_model, name="small", vocab_size=vocab)
    itself = ModelDrafter(target, name="self", vocab_size=vocab)
    for drafter, spare in [(NgramDrafter(), 0), (small, 0), (small, 2), (itself, 0)]:
        state, rounds, _ = decode_once(target, tokenizer, drafter, prompt, k=4, new_tokens=24,
                                       sampling=greedy, spare=spare)
        assert state.generated == plain.generated, f"{label}: {drafter.name} (spare {spare}) diverged"
    assert all(t.accepted for r in rounds for t in r.drafted)  # the target drafting for itself


def assert_sampling_keeps_the_distribution(target, decoder, drafter, vocab: int) -> None:
    """Sampled speculation on `target` (computed by `decoder`) draws its first two
    tokens from the target's own distribution, whatever `drafter` proposes."""
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 1, 4]
    settings = SamplingSettings(temperature=1.5)
    # The exact marginals, from the decoder's own logits.
    first_exact, second_exact = exact_two_token_marginals(
        target, prompt, settings, lambda ids: decoder.logits(ids, new_cache(target), keep=1)[-1])
    first, second = sampled_marginals(target, drafter, word_tokenizer(vocab), prompt, settings, 600, new_tokens=2, seed=99)
    assert total_variation(first, first_exact) < 0.09  # sampling noise at n=600: ~0.05
    assert total_variation(second, second_exact) < 0.09
