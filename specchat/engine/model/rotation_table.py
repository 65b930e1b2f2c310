"""The rotary embedding's cos and sin per position, from the model's own rotary
module, computed once for a range of positions and indexed by each pass.

Why: calling transformers' rotary module on every pass cost ~60 us of a 2.7 ms plain
step of the embedded target (2-core Zen 5 EPYC). Its value at a position does not
depend on the other positions of the call (an outer product, then cos and sin), so
the table holds the same bits a per-pass call gives.

Only for rope types whose frequencies are fixed at load; "dynamic" and "longrope"
change them with the sequence's length, and keep the per-pass call.
"""

from __future__ import annotations

import torch

_FIXED = ("default", "linear", "llama3")
_FIRST = 1024  # positions of the first table; it doubles as the context grows


class RotationTable:
    """(cos, sin) [positions, head size] fp32 for a pass's positions (1-D). `rotary` is
    called as transformers' rotary modules are: (x, position ids [1, n]) -> (cos, sin)
    [1, n, head size]; a trained drafter gives its own (drafters/draft_model.py)."""

    def __init__(self, rotary) -> None:
        self.rotary = rotary
        self.cos = self.sin = None

    @classmethod
    def of(cls, rotary) -> RotationTable | None:
        return cls(rotary) if getattr(rotary, "rope_type", None) in _FIXED else None

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._hold(int(positions.max()) + 1, x)
        return self.cos[positions], self.sin[positions]

    def span(self, start: int, end: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of positions start..end-1, with no positions tensor to read (on
        CUDA that read waits for the device)."""
        self._hold(end, x)
        return self.cos[start:end], self.sin[start:end]

    def _hold(self, needed: int, x: torch.Tensor) -> None:
        """Make the table reach `needed` positions, on x's device."""
        if self.cos is None or needed > self.cos.shape[0] or self.cos.device != x.device:
            held = 0 if self.cos is None else self.cos.shape[0]
            size = max(needed, 2 * held, _FIRST)
            cos, sin = self.rotary(x[None], torch.arange(size, device=x.device)[None])
            self.cos, self.sin = cos[0].float(), sin[0].float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x rotated by the rotary embedding's (cos, sin): the halves of the last dimension
    paired, as transformers' rotate_half pairs them."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
