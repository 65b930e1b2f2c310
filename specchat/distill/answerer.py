"""The target answering for the distill data as `specchat run` runs it.

The target is loaded as the chat loads it (the CPU decoder in the format chosen for
this machine, q4_1 blocks and an int8 KV cache on the project's EPYC), the shipped
drafter drafts, and every answer runs through the engine's own speculative loop
(engine/loop/speculative.py), one sequence at a time, with the pieces ChatSession
gives it: the same stop ids, the k auto rule seeded by the warm-up, alternatives
filling the verify pass. So a greedy answer is the target's own greedy answer,
token for token, in the numerics users run, which is what a drafter must imitate.

Why not batches of the fp16-packed model (batch_decode.py, what grow.py used
first): 6.9 answer tokens/s measured (about 50 per CPU-second estimated after length
groups), where the CPU decoder decodes one sequence at 200-250 tokens/s here.

Sampled rows (the user turns the target writes, every n-th shard's answers) draw
from a seeded generator with a fixed draft length: the k auto rule adapts to
timings, and a sampled round's random draws depend on k, so a fixed k keeps a shard
reproducible (a resumed run makes what one run would have). Speculative sampling
keeps the target's distribution whatever k is.

All of it on the calling thread: torch's OpenMP team belongs to the first thread
that ran torch, and passes from another thread ran at half speed.
"""

from __future__ import annotations

import threading
from typing import Callable

import torch

from specchat.engine.loop.alternatives import cheap_width, spare_for
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.session import context_length, end_of_turn_ids
from specchat.engine.loop.speculative import (
    DecodeState,
    SpeculativeDecoder,
    StopRules,
    prefill,
)
from specchat.engine.model.forward import new_cache, sync_cache
from specchat.engine.policy.costs import StepCosts
from specchat.engine.policy.draft_length import AdaptiveK, FixedK

PASS_ROOM = 32  # positions a verify pass may write past an answer's end (as ChatSession reserves)
SAMPLED_K = 3  # draft length of sampled rows


class Answerer:
    """One target and drafter; every answer starts from an empty cache, as a
    one-shot `specchat run` does. Reusing the previous prompt's cached system block
    changed an answer: the CPU decoder's int8 KV cache makes a prompt's logits depend
    a little on how it was fed (one pass, or a cached prefix and the rest), and one
    of four greedy answers of 48 tokens left the fresh one's at its 24th token.
    Feeding the block again costs a few dozen prompt ids, at prefill speed."""

    def __init__(self, target, drafter, *, max_k: int = 8) -> None:
        self.target, self.drafter, self.tokenizer = target, drafter, target.tokenizer
        self.max_k = max_k
        model = target.model
        self.end_ids = end_of_turn_ids(model, self.tokenizer)
        self.context = context_length(model)
        self._width = cheap_width(model.device, getattr(target, "precision", ""))
        self._cache, self._cached = new_cache(model), []
        self.costs = StepCosts()
        self._greedy_policy: AdaptiveK | FixedK | None = None
        self._never = threading.Event()  # nothing cancels an answer here

    def warm_up(self, progress: Callable[[str], None] = lambda _m: None) -> None:
        """Time the passes the k auto rule uses, as ChatSession.warm_up does."""
        from specchat.engine.policy.warmup import measure_costs

        self.costs = measure_costs(self.target, self.drafter, max_k=self.max_k, width=self._width,
                                   spare=self._spare, progress=progress)
        self._greedy_policy = None

    def reset(self) -> None:
        """Forget the cached context (the measured costs stay), as a fresh process."""
        self._cache, self._cached = new_cache(self.target.model), []
        self.drafter.reset()

    def _spare(self, k: int) -> int:
        return spare_for(k, None, self._width)

    def _policy(self, greedy: bool, sampled_k: int) -> AdaptiveK | FixedK:
        if self.drafter.kind == "none":
            return FixedK(0)
        if not greedy:
            return FixedK(sampled_k)
        if self._greedy_policy is None:  # its measurements carry over between answers
            self._greedy_policy = AdaptiveK.seeded(self.max_k, self.costs, self.drafter.name,
                                                   getattr(self.drafter, "calibration", None))
        return self._greedy_policy

    @torch.inference_mode()
    def answer(self, prompt: list[int], max_new_tokens: int, sampling: SamplingSettings | None = None,
               generator: torch.Generator | None = None, sampled_k: int = SAMPLED_K) -> list[int]:
        """The target's continuation of `prompt` (an end-of-turn id included where it
        ended on one): greedy (k auto) without `sampling`, else drawn with `generator`,
        `sampled_k` drafts a round."""
        sampling = sampling or SamplingSettings()
        if len(prompt) + 1 >= self.context:
            raise ValueError(f"a prompt of {len(prompt)} ids leaves no room in a context of {self.context}")
        model = self.target.model
        self.reset()
        self._cache.reserve(min(len(prompt) + max_new_tokens, self.context) + PASS_ROOM)
        prefill(model, self._cache, self._cached, self.drafter, prompt)
        policy = self._policy(sampling.greedy, sampled_k)
        policy.new_answer()
        rules = StopRules(eos_ids=self.end_ids, max_new_tokens=max_new_tokens, max_total_tokens=self.context)
        decoder = SpeculativeDecoder(model, self._cache, self._cached, self.drafter,
                                     IncrementalDecoder(self.tokenizer), sampling, policy, rules, generator,
                                     self._never, spare=self._spare)
        state = DecodeState(tokens=list(prompt), prompt_len=len(prompt))
        for r in decoder.run(state, 0):
            self.costs.observe(r)
        return state.generated

    @torch.inference_mode()
    def argmax_labels(self, prompt: list[int], answer: list[int]) -> list[int]:
        """The target's argmax at every position of `answer` (what greedy decoding
        would say there), by one teacher-forced pass over it."""
        logits, _ = sync_cache(self.target.model, self._cache, self._cached, prompt + answer[:-1],
                               keep=len(answer))
        return logits.argmax(dim=-1).tolist()


def load_answerer(target_spec: str, drafter_spec: str, quant: str | None,
                  progress: Callable[[str], None]) -> Answerer:
    """Target and drafter loaded as `specchat run` loads them (cli._open_session),
    on the CPU, warmed up. quant None: the format chosen for this machine."""
    from specchat.models import load_drafter, load_target, settle_format

    target = load_target(target_spec, device="cpu", quant=quant, progress=progress, lean=True)
    drafter = load_drafter(drafter_spec, target, quant=quant, progress=progress)
    settle_format(target, drafter, progress)
    answerer = Answerer(target, drafter)
    answerer.warm_up(progress)
    return answerer
