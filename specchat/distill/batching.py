"""Length-sorted batches: sequences of similar length together, so little padding."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def length_groups(items: list[T], length: Callable[[T], int], tokens_per_batch: int) -> list[list[T]]:
    """Items sorted by length, cut into groups whose padded size (longest × count)
    stays within tokens_per_batch (a longer item than that gets a group of its own)."""
    groups: list[list[T]] = []
    current: list[T] = []
    for item in sorted(items, key=length):
        if current and length(item) * (len(current) + 1) > tokens_per_batch:
            groups.append(current)
            current = []
        current.append(item)
    if current:
        groups.append(current)
    return groups


def in_length_groups(items: list[T], length: Callable[[T], int], tokens_per_batch: int,
                     run: Callable[[list[T]], list]) -> list:
    """run(group) on every length group of items, the results in the items' order.

    Why, for batched decoding: one batch is padded to its longest prompt, so a few
    documents among short questions made every row carry their width. The 64 prompts
    of a store shard (37-738 ids, mean 100) took 143 CPU-seconds for 24 new tokens
    each in one batch on a 2-core EPYC, 29.5 in two groups split at 200 ids."""
    results: list = [None] * len(items)
    for group in length_groups(list(range(len(items))), lambda i: length(items[i]), tokens_per_batch):
        for i, result in zip(group, run([items[i] for i in group])):
            results[i] = result
    return results
