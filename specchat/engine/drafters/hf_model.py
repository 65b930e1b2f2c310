"""A transformers causal LM as a drafter: the target's tokenizer, its own KV cache,
resynchronised to the verified tokens by longest common prefix each round."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from specchat.engine.drafters.protocol import Alternative, Proposal, choose_alternatives, top_alternatives
from specchat.engine.loop.sampling import answer_mask, logits_to_probs, penalise_repeats, pick
from specchat.engine.model.forward import forward_logits, new_cache, sync_cache


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
