"""GGUF's Q8_0 blocks computed as llama.cpp computes them: int8 codes with a scale
per 32 inputs, against activations quantized to int8 per block, by integer dot
products (kernels/blockdot.cpp).

Why: torch has no 8-bit block kernel, so the output layer stayed fp16, a quarter of
the embedded model's bytes read a step. Its GGUF stores that layer (the tied
embedding) in Q8_0: requantizing the dequantized file finds the same codes, so only
the activations are rounded (to int8, as llama.cpp rounds them). It is the output
layer of the int4-q8head format (weight_formats.py), whose fidelity is measured
like any other's at first load (format_choice.py).

The kernels are built on first use (cpu_kernels.py); where they cannot be, the
format is unavailable and the others remain (weight_formats.available).
"""

from __future__ import annotations

import torch
from torch import nn

from specchat.engine.cpu_kernels import why_unavailable

GROUP = 32  # inputs per block, as in GGUF's Q8_0


OUTS = 4  # outputs per tile (kernels/blockdot.cpp)


def _as_bytes(values: torch.Tensor) -> torch.Tensor:
    """fp32 [tiles, blocks, OUTS] as their bytes [tiles, blocks, 4 OUTS]."""
    return values.float().contiguous().view(torch.uint8)


def _tiles(codes: torch.Tensor, *per_block: torch.Tensor) -> torch.Tensor:
    """codes uint8 [out, blocks, bytes], per_block fp32 [out, blocks] -> uint8
    [out / OUTS, blocks, OUTS (bytes + 4 per value)]: per tile and block, the OUTS
    outputs' codes, then each value of theirs (the layout the kernels stream)."""
    out_features, blocks, width = codes.shape
    grouped = codes.view(-1, OUTS, blocks, width).transpose(1, 2).reshape(-1, blocks, OUTS * width)
    values = [_as_bytes(v.view(-1, OUTS, blocks).transpose(1, 2)) for v in per_block]
    return torch.cat([grouped, *values], dim=-1).contiguous()


class _BlockLinear(nn.Module):
    """Outputs padded to a multiple of OUTS (zero weights), cut off after the product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        reason = why_unavailable()
        if reason is not None:
            raise RuntimeError(f"specchat's block kernels are unavailable: {reason}")
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float()
        padding = -self.out_features % OUTS
        self._padded = torch.cat([weight.detach().float(), weight.new_zeros(padding, self.in_features).float()])

    def _finish(self, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if y.shape[-1] != self.out_features:
            y = y[:, : self.out_features]
        y = y.view(*shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y


class Q8_0Linear(_BlockLinear):
    """y = x W^T + b: W as Q8_0 blocks (int8 codes, a scale per 32 inputs), x int8 per block."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(weight, bias)
        groups = self._padded.view(self._padded.shape[0], -1, GROUP)
        scale = (groups.abs().amax(dim=-1) / 127).clamp(min=1e-12)
        codes = (groups / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
        self.tiles = _tiles(codes.view(torch.uint8), scale)
        del self._padded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(torch.ops.specchat_cpu.q8_0_mm(x.reshape(-1, self.in_features), self.tiles),
                            x.shape)
