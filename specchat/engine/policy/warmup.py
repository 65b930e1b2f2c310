"""Warm-up at load: run the passes the k auto rule will use, and time them.

A fresh process's first passes are slow (allocations, kernels chosen on first
use), and a rule that learns its costs from them decides that drafting does not
pay: the first chat answer drafted almost nothing before warm-up existed (52
rounds for 55 tokens, acceptance 16%). So before the first prompt the engine runs,
through the same loop that answers (speculative.SpeculativeDecoder):

- rounds of every verify-pass size the rule may use (1 … max_k + 1 tokens, wider
  where alternatives fill the pass), with a drafter that proposes a fixed run;
- plain rounds (nothing drafted): the plain step the speedup estimate divides by;
- rounds with the session's own drafter: its drafting cost per token.

Each figure is the median of the timed rounds (the first of each kind is untimed).
The warm-up's context is thrown away afterwards; only the timings are kept.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from typing import Callable

import torch

from specchat.engine.drafters.protocol import Drafter, NoDrafter, Proposal
from specchat.engine.loop.detok import IncrementalDecoder
from specchat.engine.loop.sampling import SamplingSettings
from specchat.engine.loop.speculative import DecodeState, SpeculativeDecoder, StopRules, prefill
from specchat.engine.model.forward import new_cache
from specchat.engine.policy.costs import StepCosts
from specchat.engine.policy.draft_length import FixedK

# Plain English of about a hundred tokens: the context the timed passes read.
WARMUP_TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a lamp, "
    "a notebook and a flask of tea. From the top he could see the harbour, the fishing boats "
    "coming home, and the long line of the coast fading into the mist. He wrote down the wind, "
    "the weather and the ships that passed, because the harbour master read his notes each "
    "morning before deciding which boats could go out. "
)
TIMED_ROUNDS = 3  # per pass size, after one untimed round
PLAIN_ROUNDS = 8


class FixedRun:
    """Proposes k copies of the last token: a pass of exactly k + 1 tokens whatever
    the target makes of them (it rejects most)."""

    name = kind = "warm-up"

    def prefill(self, tokens: list[int]) -> None:
        pass

    def reset(self) -> None:
        pass

    def propose(self, tokens, k, sampling, generator, spare=0, more=None) -> Proposal:
        return Proposal(ids=[tokens[-1]] * k, p=[1.0] * k)


def warmup_ids(tokenizer) -> list[int]:
    """The warm-up text's token ids: what warm-up runs, formats are measured on
    (cpu/format_choice.py) and an int8 cache's key channels are calibrated on."""
    return tokenizer(WARMUP_TEXT, add_special_tokens=False)["input_ids"]


class WarmupContext:
    """The warm-up text in one target cache; each run of rounds starts from it again
    (prefill keeps the common prefix, so the text is read once)."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.prompt = warmup_ids(tokenizer)
        self.cache, self.cached = new_cache(model), []

    def rounds(self, drafter: Drafter, k: int, count: int, spare=lambda k: 0) -> list:
        """`count` greedy rounds at fixed k after the warm-up text."""
        drafter.reset()
        prefill(self.model, self.cache, self.cached, drafter, self.prompt)
        state = DecodeState(tokens=list(self.prompt), prompt_len=len(self.prompt))
        # No end-of-turn ids: the rounds run their count whatever the text says.
        rules = StopRules(eos_ids=frozenset(), max_new_tokens=count * (k + 1) + 1)
        decoder = SpeculativeDecoder(self.model, self.cache, self.cached, drafter, IncrementalDecoder(self.tokenizer),
                                     SamplingSettings(), FixedK(k), rules, None, threading.Event(), spare=spare)
        out = []
        for r in decoder.run(state, turn=0):
            out.append(r)
            if len(out) == count:
                break
        drafter.reset()
        return out


def measure_costs(target, drafter: Drafter, *, max_k: int = 8, width: int = 1,
                  spare: Callable[[int], int] = lambda k: 0,
                  progress: Callable[[str], None] = lambda _m: None) -> StepCosts:
    """Time the passes the rule uses on `target` (a LoadedModel) and `drafter`.
    `width`: the widest pass alternatives may fill (alternatives.cheap_width)."""
    context = WarmupContext(target.model, target.tokenizer)
    costs = StepCosts()
    verify: dict[int, list[float]] = defaultdict(list)
    # Without a drafter only the plain step is ever run.
    sizes = [] if drafter.kind == "none" else list(range(1, max(max_k, width - 1) + 1))
    fixed = FixedRun()
    with torch.inference_mode():
        # Sizes interleaved, so that drift over the warm-up does not favour any of them,
        # and each repetition starts at another size: the chat screen draws each progress
        # line while the next pass runs, and when the 2-token pass always came first it
        # timed 13.8 ms against 3.2 for 3 tokens, which priced drafting out.
        for rep in range(1 + TIMED_ROUNDS if sizes else 0):
            progress(f"warming up: verify passes of 2 to {len(sizes) + 1} tokens ({rep + 1} of {1 + TIMED_ROUNDS})…")
            for k in sizes[rep % len(sizes):] + sizes[:rep % len(sizes)]:
                r = context.rounds(fixed, k, 1)[0]
                if rep:  # the first pass of each size is untimed
                    verify[r.fed].append(r.verify_time_s)
        if drafter.kind != "none":
            progress(f"warming up: drafter {drafter.name}…")
            rounds = context.rounds(drafter, max_k, 1 + TIMED_ROUNDS, spare)[1:]
            per_token = [r.draft_time_s / (len(r.drafted) + r.unverified) for r in rounds
                         if len(r.drafted) + r.unverified]
            if per_token:
                costs.draft_s[drafter.name] = statistics.median(per_token)
            for r in rounds:
                verify[r.fed].append(r.verify_time_s)
        # Last, once everything else has run: the plain step the estimate divides by.
        progress("warming up: plain steps…")
        plain = context.rounds(NoDrafter(), 0, 1 + PLAIN_ROUNDS)[1:]
        costs.plain_step_s = costs.warm_plain_step_s = statistics.median(r.draft_time_s + r.verify_time_s
                                                                          for r in plain)
        verify[1] += [r.verify_time_s for r in plain]
    costs.verify_s = {fed: statistics.median(times) for fed, times in sorted(verify.items())}
    return costs
