"""Peers: transformers' own generate() on the same models, prompts and settings.

`hf_generate` is plain autoregressive decoding; `hf_assisted` is transformers'
assisted generation with the same drafter (`assistant_model=` for a draft model,
specchat's trained drafter included through `hf_drafter`, `prompt_lookup_num_tokens=`
for n-gram lookup). They are what specchat must beat.

Timing matches the engine's: generate() does its prefill and first token in one
forward, so the clock starts when the first new token reaches the streamer, and
tokens/s counts the tokens after it. Prompts are rendered with the same chat
template and stopped by the same end-of-turn tokens as the engine's.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedModel

from specchat.bench.hf_drafter import as_transformers_model
from specchat.bench.measure import Measurement
from specchat.bench.prompts import BenchPrompt
from specchat.engine.drafters.draft_model import DraftModel

# transformers' documented starting point for prompt lookup, used when k is adaptive.
PROMPT_LOOKUP_TOKENS = 10


@dataclass
class Peer:
    key: str  # JSON key
    label: str  # table row
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra generate() arguments


def hf_peers(drafter, k: int | None, target_model) -> list[Peer]:
    peers = [Peer("hf_generate", "transformers generate()")]
    model = getattr(drafter, "model", None)
    if drafter.kind == "model" and isinstance(model, PreTrainedModel):
        peers.append(Peer("hf_assisted", f"transformers assisted ({drafter.name})",
                          {"assistant_model": model}))
    elif drafter.kind == "model" and isinstance(model, DraftModel) and not model.cfg.reads_target_states:
        # specchat's own trained drafter, as a transformers model around the same layers
        assistant = as_transformers_model(model, target_model)
        if k is not None:  # a fixed k: the same draft length, not transformers' schedule
            assistant.generation_config.num_assistant_tokens = k
            assistant.generation_config.num_assistant_tokens_schedule = "constant"
        peers.append(Peer("hf_assisted", f"transformers assisted ({drafter.name}, no lookup)",
                          {"assistant_model": assistant}))
    elif drafter.kind == "ngram":
        n = k or PROMPT_LOOKUP_TOKENS
        peers.append(Peer("hf_assisted", f"transformers prompt lookup ({n})",
                          {"prompt_lookup_num_tokens": n}))
    return peers


class _Clock:
    """A generate() streamer that only notes when tokens arrive."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.seen_prompt = False
        self.first_at: float | None = None
        self.first_count = 0
        self.end_at: float | None = None

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def put(self, value) -> None:
        if not self.seen_prompt:  # generate() streams the prompt first
            self.seen_prompt = True
        elif self.first_at is None:
            self.first_at = self._now()
            self.first_count = int(value.numel())

    def end(self) -> None:
        self.end_at = self._now()


def _generation_config(target, settings) -> Any:
    from specchat.engine.loop.session import end_of_turn_ids

    gc = copy.deepcopy(target.model.generation_config)
    greedy = settings.temperature <= 0
    gc.do_sample = not greedy
    gc.temperature = None if greedy else settings.temperature
    gc.top_p = None if greedy else settings.top_p
    gc.top_k = None if greedy or not settings.top_k else settings.top_k
    gc.max_new_tokens = settings.max_new_tokens
    gc.min_new_tokens = None
    eos = sorted(end_of_turn_ids(target.model, target.tokenizer))
    gc.eos_token_id = eos
    if gc.pad_token_id is None:
        gc.pad_token_id = eos[0]
    return gc


def _penalty(settings, prompt_len: int) -> dict[str, Any]:
    """generate() arguments for the engine's repetition penalty, which covers the
    answer only (gc.repetition_penalty would cover the prompt too)."""
    if settings.repetition_penalty == 1.0:
        return {}
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    return {"logits_processor": LogitsProcessorList([
        RepetitionPenaltyLogitsProcessor(settings.repetition_penalty, prompt_ignore_length=prompt_len)])}


def measure_hf(target, prompt: BenchPrompt, settings, peer: Peer) -> Measurement:
    import torch

    tok = target.tokenizer
    gc = _generation_config(target, settings)
    m = Measurement()
    messages: list[dict[str, str]] = []
    for turn in prompt.turns:
        messages.append({"role": "user", "content": turn})
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, add_special_tokens=False, return_tensors="pt").to(target.device)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        clock = _Clock(target.device.type == "cuda")
        with torch.inference_mode():
            out = target.model.generate(**enc, generation_config=gc, streamer=clock, **peer.kwargs,
                                        **_penalty(settings, enc["input_ids"].shape[1]))
        new = out[0, enc["input_ids"].shape[1]:]
        answer = tok.decode(new, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": answer})
        m.texts.append(answer)
        if clock.first_at is not None and clock.end_at is not None:
            m.tokens += int(new.numel()) - clock.first_count
            m.elapsed_s += clock.end_at - clock.first_at
    return m
