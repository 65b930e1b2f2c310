"""The draft vocabulary: the tokens the target itself emits most often.

A small drafter spends most of its time in its output layer; predicting over the
target's most frequent few thousand output tokens instead of all 49k costs a fraction
and loses only the rare tokens (which the target then supplies as its correction).
"""

from __future__ import annotations

from collections import Counter

import torch


def choose_vocab(records: list[dict], size: int, always: tuple[int, ...] = ()) -> list[int]:
    """Target ids of the `size` most frequent labels (ties broken by id, so the
    choice is deterministic), plus `always` (end-of-turn) whatever their count.

    A few hundred answers use fewer distinct tokens than a useful vocabulary holds;
    the rest is filled with the target's runner-up tokens (its top-k at each
    position, when the records carry them), most frequent first: tokens it
    considered are the likeliest to appear in answers not yet seen.
    """
    counts = Counter(t for rec in records for t in rec["labels"])
    runner_up = Counter(t for rec in records if "top_ids" in rec for t in rec["top_ids"][:, 1:].flatten().tolist())
    chosen = list(dict.fromkeys(always))
    for ranked in (sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
                   sorted(runner_up.items(), key=lambda kv: (-kv[1], kv[0]))):
        for token, _ in ranked:
            if len(chosen) >= size:
                return chosen
            if token not in chosen:
                chosen.append(token)
    return chosen


def coverage(records: list[dict], vocab: list[int]) -> float:
    """Share of label positions whose token is in the vocabulary."""
    keep = set(vocab)
    total = sum(len(rec["labels"]) for rec in records)
    hit = sum(1 for rec in records for t in rec["labels"] if t in keep)
    return hit / total if total else 0.0


def index_map(vocab: list[int], target_vocab: int) -> torch.Tensor:
    """target id → draft index, -100 (ignored by cross-entropy) outside the vocabulary."""
    table = torch.full((target_vocab,), -100, dtype=torch.long)
    table[torch.tensor(vocab)] = torch.arange(len(vocab))
    return table
