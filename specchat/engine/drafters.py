"""Drafters: whatever proposes the next few tokens for the target to verify.

One protocol, three implementations:

- `ModelDrafter`: a small causal LM with the target's tokenizer and its own KV cache;
- `NgramDrafter`: prompt lookup in the conversation's own tokens (no model);
- `NoDrafter`: proposes nothing, so the loop decodes plainly (the baseline).

A drafter is told the whole verified token sequence each round. Model drafters keep
the ids their cache holds and reuse the longest common prefix, so rolling back
after a rejection, or catching up after a bonus token, needs no separate call.

Asked for `spare` > 0 (greedy rounds only), a model drafter also offers up to that
many alternatives: other likely tokens at drafted positions, from the logits it
computed anyway. The target verifies them in the same pass (see alternatives.py).

A drafter with `reads_target_states = True` (feature_drafter.FeatureDrafter) is also
handed the target's last hidden states after every target pass, through
`take_target_states(start, states)`: positions start.. of the verified sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from transformers import PreTrainedModel

from specchat.engine.forward import forward_logits, new_cache, sync_cache
from specchat.engine.sampling import SamplingSettings, answer_mask, logits_to_probs, penalise_repeats, pick


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


class NgramDrafter:
    """Prompt-lookup decoding: find the latest earlier occurrence of the last n
    tokens (n from max_n down to min_n) and propose what followed it."""

    kind = "ngram"

    def __init__(self, max_n: int = 3, min_n: int = 1, window: int = 4096) -> None:
        self.name = "ngram"
        self.max_n, self.min_n, self.window = max_n, min_n, window

    def prefill(self, tokens: list[int]) -> None:
        pass

    def reset(self) -> None:
        pass

    def propose(self, tokens, k, sampling, generator, spare=0, more=None) -> Proposal:
        if k <= 0:
            return Proposal()
        follow = find_continuation(tokens, k, max_n=self.max_n, min_n=self.min_n, window=self.window)
        return Proposal(ids=follow, p=[1.0] * len(follow))


def find_continuation(tokens: list[int], length: int, *, max_n: int, min_n: int, window: int) -> list[int]:
    """Up to `length` tokens that followed the latest earlier occurrence of the last n
    tokens (n from max_n down to min_n); [] when there is none."""
    history = tokens[-window:]
    for n in range(max_n, min_n - 1, -1):
        if len(history) <= n:
            continue
        tail = history[-n:]
        # Latest match first: recent text predicts the continuation best.
        for start in range(len(history) - n - 1, -1, -1):
            if history[start:start + n] == tail:
                return list(history[start + n:start + n + length])
    return []


class ModelDrafter:
    """A draft language model with the target's tokenizer.

    vocab_size: the target's vocabulary size; the drafter's logits are cut (padded
    embedding rows) or padded to it so p and q live on the same support.
    """

    kind = "model"

    def __init__(self, model: PreTrainedModel, name: str, vocab_size: int) -> None:
        self.model = model
        self.name = name
        self.vocab_size = vocab_size
        self._cache = new_cache(model)
        self._cached: list[int] = []

    def reset(self) -> None:
        self._cache = new_cache(self.model)
        self._cached = []

    def prefill(self, tokens: list[int]) -> None:
        if len(tokens) > 1:
            sync_cache(self.model, self._cache, self._cached, tokens[:-1], keep=0)

    def _fit_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        n = logits.shape[-1]
        if n > self.vocab_size:
            return logits[..., : self.vocab_size]
        if n < self.vocab_size:
            pad = logits.new_full((*logits.shape[:-1], self.vocab_size - n), float("-inf"))
            return torch.cat([logits, pad], dim=-1)
        return logits

    def propose(self, tokens, k, sampling, generator, spare=0, more=None) -> Proposal:
        if k <= 0:
            return Proposal()
        logits, fed = sync_cache(self.model, self._cache, self._cached, tokens, keep=1)
        logits = self._fit_vocab(logits[-1])
        ids: list[int] = []
        ps: list[float] = []
        dists = []
        candidates: list[Alternative] = []
        seen = answer_mask(tokens, sampling, self.vocab_size, logits.device)
        for i in range(k):
            if seen is not None:
                logits = penalise_repeats(logits, seen, sampling.repetition_penalty)
            probs = logits_to_probs(logits, sampling)
            token = pick(logits, probs, sampling, generator)
            ids.append(token)
            ps.append(float(probs[token]))
            dists.append(probs)
            if seen is not None:
                seen[token] = True
            if spare and sampling.greedy:
                candidates += top_alternatives(i, probs, token)
            if i + 1 == k or (more is not None and not more(ps)):
                break
            logits = self._fit_vocab(forward_logits(self.model, self._cache, [token], keep=1)[-1])
            self._cached.append(token)
        return Proposal(ids=ids, p=ps, dists=None if sampling.greedy else torch.stack(dists),
                        catchup_tokens=fed, alternatives=choose_alternatives(candidates, ps, spare))
