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
