"""Small builders shared by the engine tests (real models, no stand-ins)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from specchat.engine.detok import IncrementalDecoder
from specchat.engine.draft_length import FixedK
from specchat.engine.forward import new_cache
from specchat.engine.sampling import SamplingSettings, logits_to_probs
from specchat.engine.speculative import DecodeState, SpeculativeDecoder, StopRules, prefill


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
    k every round unless a `policy` (draft_length.py) is given."""
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


def exact_two_token_marginals(model, prompt, settings):
    """P(t1) and P(t2) under the target with the given sampling settings, enumerated."""
    with torch.inference_mode():
        first = logits_to_probs(model(torch.tensor([prompt])).logits[0, -1], settings)
        batch = torch.tensor([prompt + [t] for t in range(first.numel())])
        second_given = logits_to_probs(model(batch).logits[:, -1], settings)
    return first, first @ second_given
