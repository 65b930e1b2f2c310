"""Drafters: whatever proposes the next few tokens for the target to verify.

The protocol and what every drafter returns (`Proposal`, `Alternative`), and
`NoDrafter`, which proposes nothing, so the loop decodes plainly (the baseline).
The others: `ModelDrafter` (hf_model.py, a small causal LM with the target's
tokenizer and its own KV cache), `NgramDrafter` (ngram.py, prompt lookup in the
conversation's own tokens), `TrainedDrafter` (trained.py) and `FeatureDrafter`
(states_reading.py), the drafters `specchat distill` trains.

A drafter is told the whole verified token sequence each round. Model drafters keep
the ids their cache holds and reuse the longest common prefix, so rolling back
after a rejection, or catching up after a bonus token, needs no separate call.

Asked for `spare` > 0 (greedy rounds only), a model drafter also offers up to that
many alternatives: other likely tokens at drafted positions, from the logits it
computed anyway. The target verifies them in the same pass (see loop/alternatives.py).

A drafter with `reads_target_states = True` (states_reading.FeatureDrafter) is also
handed the target's last hidden states after every target pass, through
`take_target_states(start, states)`: positions start.. of the verified sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from specchat.engine.loop.sampling import SamplingSettings


@dataclass(frozen=True)
class Alternative:
    """Another token the drafter finds likely at drafted position `position`
    (0-based), in place of ids[position]: verified in the same pass as the run."""

    position: int
    token_id: int
    p: float  # the drafter's probability of it


@dataclass
class Proposal:
    ids: list[int] = field(default_factory=list)
    p: list[float] = field(default_factory=list)  # drafter probability of each proposed id
    # [len(ids), V] drafter distributions for rejection sampling; None for a
    # deterministic drafter (p is one-hot on the proposed id).
    dists: torch.Tensor | None = None
    catchup_tokens: int = 0  # verified tokens the drafter had to feed before drafting
    alternatives: list[Alternative] = field(default_factory=list)  # in position order


# Alternatives considered per drafted position: the measured gain of a 4th is small.
ALTERNATIVES_PER_POSITION = 3


def choose_alternatives(candidates: list[Alternative], run_p: list[float], spare: int) -> list[Alternative]:
    """The `spare` candidates beside a run with drafter probabilities `run_p` most
    likely to be needed and right: one at position i matters only if the drafted run
    holds up to i, so each is valued at the drafter's probability of reaching i times
    its own probability. Candidates past the run are left out. In position order."""
    candidates = [a for a in candidates if a.position < len(run_p)]
    if spare <= 0 or not candidates:
        return []
    reach = [1.0]
    for p in run_p:
        reach.append(reach[-1] * p)
    ranked = sorted(candidates, key=lambda a: reach[a.position] * a.p, reverse=True)[:spare]
    return sorted(ranked, key=lambda a: (a.position, -a.p))


def top_alternatives(position: int, probs: torch.Tensor, chosen: int, ids: torch.Tensor | None = None) -> list[Alternative]:
    """The likeliest tokens other than `chosen` in a drafter distribution `probs`
    (over `ids`, the token ids of its entries, when it covers a subset)."""
    top = torch.topk(probs, ALTERNATIVES_PER_POSITION + 1)
    tokens = (ids[top.indices] if ids is not None else top.indices).tolist()
    return alternatives_among(position, list(zip(tokens, top.values.tolist())), chosen)


def alternatives_among(position: int, likeliest: list[tuple[int, float]], chosen: int) -> list[Alternative]:
    """Alternatives at `position` from (token, p) pairs in falling p: all but `chosen`."""
    out = [Alternative(position, token, p) for token, p in likeliest if token != chosen and p > 0]
    return out[:ALTERNATIVES_PER_POSITION]


class Drafter(Protocol):
    name: str
    kind: str  # "model" | "ngram" | "none"

    def prefill(self, tokens: list[int]) -> None:
        """Read a prompt ahead of the first round (so round 0's draft time is drafting)."""

    def propose(self, tokens: list[int], k: int, sampling: SamplingSettings,
                generator: torch.Generator | None, spare: int = 0,
                more: Callable[[list[float]], bool] | None = None) -> Proposal:
        """Up to k tokens to follow `tokens` (the whole verified sequence), and up to
        `spare` alternatives where the drafter has any (greedy only). A drafter that
        drafts token by token asks `more(p of each token so far)` before the next one
        and stops when it says no."""

    def reset(self) -> None:
        """Forget any cached state (a new conversation, or after an error)."""


class NoDrafter:
    name = "none"
    kind = "none"

    def prefill(self, tokens: list[int]) -> None:
        pass

    def propose(self, tokens, k, sampling, generator, spare=0, more=None) -> Proposal:
        return Proposal()

    def reset(self) -> None:
        pass
