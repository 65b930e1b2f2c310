"""Prompt-lookup drafting: the continuation of the latest earlier occurrence of the
context's last few tokens, with no model."""

from __future__ import annotations

from specchat.engine.drafters.protocol import Proposal


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
