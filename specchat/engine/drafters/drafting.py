"""Drafting a run of tokens from a trained drafter's outputs (trained.py's
TrainedDrafter, states_reading.py's FeatureDrafter): prompt lookup first, the
model's draft-vocabulary logits elsewhere, alternatives beside the run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from specchat.engine.drafters.ngram import find_continuation
from specchat.engine.drafters.protocol import (ALTERNATIVES_PER_POSITION, Alternative, Proposal, alternatives_among,
                                               choose_alternatives)
from specchat.engine.loop.sampling import SamplingSettings, answer_mask, logits_to_probs, penalise_repeats, sample

if TYPE_CHECKING:
    from specchat.engine.drafters.draft_model import DraftModel


def lookup(tokens: list[int], max_n: int = 3, min_n: int = 2, window: int = 2048) -> int | None:
    """The token that followed the latest earlier occurrence of the last n tokens
    (n from max_n down to min_n), or None. Answers repeat their prompt and themselves
    (names, numbers, list patterns); measured on held-out answers, taking such a
    continuation when there is one raised agreement with the target from 0.41 to
    0.54 for the one-layer drafter, and a 1-token match only lowered it."""
    follow = find_continuation(tokens, 1, max_n=max_n, min_n=min_n, window=window)
    return follow[0] if follow else None


def read_greedy(model: DraftModel, logits: torch.Tensor, likeliest: int) -> tuple[int, float, list[tuple[int, float]]]:
    """(target id of the argmax, its probability, the `likeliest` top (id, p) pairs)
    from draft-vocabulary logits, read from the device in one transfer: on CUDA each
    read waits for the device, and reading each value apart costs a drafted token six
    to eight waits."""
    probs = torch.softmax(logits.float(), dim=-1)
    best = torch.argmax(logits).view(1)
    parts = [model.vocab_ids[best].double(), probs[best].double()]
    if likeliest:
        top = torch.topk(probs, likeliest)
        parts += [model.vocab_ids[top.indices].double(), top.values.double()]
    values = torch.cat(parts).tolist()  # ids are exact in float64
    ids, ps = values[2:2 + likeliest], values[2 + likeliest:]
    return int(values[0]), values[1], [(int(t), p) for t, p in zip(ids, ps)]


def pick_draft_token(model: DraftModel, logits: torch.Tensor | None, sampling: SamplingSettings,
                     generator: torch.Generator | None, copied: int | None) -> tuple[int, float, torch.Tensor | None]:
    """One drafted token: (target id, drafter probability, its full-vocabulary
    distribution when sampling). A continuation copied from the context (`copied`,
    see `lookup`) comes first; elsewhere the model's draft-vocabulary logits."""
    if copied is not None:
        # A copied token is a deterministic proposal: p = 1, a one-hot distribution.
        dist = None if sampling.greedy else F.one_hot(
            torch.tensor(copied, device=model.device), model.cfg.target_vocab).float()
        return copied, 1.0, dist
    if sampling.greedy:
        # Greedy needs no full-vocabulary tensor: argmax and p in the subset.
        token, p, _ = read_greedy(model, logits, 0)
        return token, p, None
    # Draft logits placed on the target's vocabulary; -inf outside the subset, so the
    # distribution is zero there (still valid for rejection sampling).
    full = logits.new_full((model.cfg.target_vocab,), float("-inf"), dtype=torch.float32)
    full[model.vocab_ids] = logits.float()
    probs = logits_to_probs(full, sampling)
    token = sample(probs, generator)
    return token, float(probs[token]), probs


def draft_run(model: DraftModel, output: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor],
              advance: Callable[[list[int], torch.Tensor], torch.Tensor], tokens: list[int], k: int,
              sampling: SamplingSettings, generator: torch.Generator | None, use_lookup: bool,
              catchup: int, spare: int = 0, more: Callable[[list[float]], bool] | None = None) -> Proposal:
    """k drafted tokens after `tokens`, one `pick_draft_token` each: `output` is the
    model's output after the last token, `logits_of` turns an output into draft logits,
    and `advance(drafted, output)` feeds drafted tokens in order and returns the output
    after the last. A token copied by lookup needs no model output, so feeding drafted
    tokens waits until the model is asked again (then they go in together), and a run
    that ends in copies leaves them to the next round's catch-up: copying a long
    passage costs one model pass, not one per token. Alternatives (greedy, `spare` > 0)
    come from the model's logits wherever they are at hand (not after unfed copies).
    `more(ps)`, when given, is asked after each token whether to draft another."""
    ids: list[int] = []
    ps: list[float] = []
    dists = []
    context = list(tokens)
    unfed: list[int] = []  # drafted tokens the model has not seen yet
    candidates: list[Alternative] = []
    wants_alternatives = spare > 0 and sampling.greedy
    seen = answer_mask(tokens, sampling, model.cfg.target_vocab, output.device)
    if seen is not None:
        seen = seen[model.vocab_ids]  # on the draft vocabulary
    for i in range(k):
        copied = lookup(context) if use_lookup else None
        if copied is None and unfed:
            output, unfed = advance(unfed, output), []
        # The model's logits are at hand for a copied token too when nothing is unfed:
        # its own guesses there are alternatives to the copy.
        logits = logits_of(output) if copied is None or (wants_alternatives and not unfed) else None
        if logits is not None and seen is not None:
            logits = penalise_repeats(logits, seen, sampling.repetition_penalty)
        if wants_alternatives and logits is not None:
            # The pick and its alternatives in one read from the device.
            best, best_p, likeliest = read_greedy(model, logits, ALTERNATIVES_PER_POSITION + 1)
            token, p, dist = (copied, 1.0, None) if copied is not None else (best, best_p, None)
            candidates += alternatives_among(i, likeliest, token)
        else:
            token, p, dist = pick_draft_token(model, logits, sampling, generator, copied)
        if dist is not None:
            dists.append(dist)
        ids.append(token)
        ps.append(p)
        context.append(token)
        unfed.append(token)
        if seen is not None:
            seen |= model.vocab_ids == token
        if more is not None and i + 1 < k and not more(ps):
            break
    return Proposal(ids=ids, p=ps, dists=torch.stack(dists) if dists else None, catchup_tokens=catchup,
                    alternatives=choose_alternatives(candidates, ps, spare))
