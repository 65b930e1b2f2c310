"""The benchmark loop: baseline and speculation on each prompt, alternating.

Both run in this process on the same loaded target with the same settings, on the
engine thread, and every session starts from the warm-up's measured costs, as a
chat's does: the baseline is the same engine with `NoDrafter` (speculation off), so
the ratio isolates what drafting buys. The order flips from one prompt to the next
so that slow drift (CPU contention, thermal throttling) does not favour either
side, and a short unmeasured run of every mode comes first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from specchat.bench.measure import Measurement, measure
from specchat.bench.peers import Peer, measure_hf
from specchat.bench.prompts import BenchPrompt

WARMUP_TOKENS = 16


@dataclass
class PromptResult:
    prompt: BenchPrompt
    baseline: Measurement
    spec: Measurement
    peers: dict[str, Measurement] = field(default_factory=dict)


def steps(prompts: list[BenchPrompt], peers: list[Peer]) -> int:
    """Measured runs, for a progress bar: warm-up plus two per prompt plus peers."""
    return (1 + len(prompts)) * (2 + len(peers))


def run_bench(target, drafter, prompts: list[BenchPrompt], settings, *, peers: list[Peer] = (),
              on_step: Callable[[str], None] | None = None, costs=None) -> list[PromptResult]:
    from specchat.engine.drafters.protocol import NoDrafter

    step = on_step or (lambda _label: None)
    baseline = NoDrafter()
    warm = BenchPrompt(prompts[0].category, prompts[0].turns[:1], "warm-up")
    warm_settings = copy.copy(settings)
    warm_settings.max_new_tokens = min(WARMUP_TOKENS, settings.max_new_tokens)
    for mode in (baseline, drafter):
        measure(target, mode, warm, warm_settings, costs)
        step("warm-up")
    for peer in peers:
        measure_hf(target, warm, warm_settings, peer)
        step("warm-up")

    results = []
    for i, prompt in enumerate(prompts):
        label = prompt.id or prompt.category
        order = [("baseline", baseline), ("spec", drafter)]
        if i % 2:
            order.reverse()
        runs: dict[str, Measurement] = {}
        for name, mode in order:
            runs[name] = measure(target, mode, prompt, settings, costs)
            step(label)
        peer_runs = {}
        for peer in peers:
            peer_runs[peer.key] = measure_hf(target, prompt, settings, peer)
            step(label)
        results.append(PromptResult(prompt, runs["baseline"], runs["spec"], peer_runs))
    return results
