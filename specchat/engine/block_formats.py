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

GROUP = 32  # inputs per block, as in GGUF's Q4_1 and Q8_0
OUTS = 4  # outputs per tile (kernels/blockdot.cpp)


def _tiles(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes int8 [out, blocks, GROUP], scale fp32 [out, blocks] -> uint8 [out / OUTS,
    blocks, OUTS (GROUP + 4)]: per tile and block, the OUTS outputs' codes, then their
    scales' bytes (the one stream the kernel reads)."""
    out_features, blocks, width = codes.shape
    grouped = codes.view(torch.uint8).view(-1, OUTS, blocks, width).transpose(1, 2).reshape(-1, blocks, OUTS * width)
    scales = scale.view(-1, OUTS, blocks).transpose(1, 2).contiguous().view(torch.uint8)
    return torch.cat([grouped, scales], dim=-1).contiguous()


class Q8_0Linear(nn.Module):
    """y = x W^T + b: W as Q8_0 blocks (int8 codes, a scale per 32 inputs), x int8 per
    block; fp32 out. Outputs are padded to a multiple of OUTS with zero weights inside
    and cut off after the product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        reason = why_unavailable()
        if reason is not None:
            raise RuntimeError(f"specchat's block kernels are unavailable: {reason}")
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float()
        weight = weight.detach().float()
        padded = torch.cat([weight, weight.new_zeros(-self.out_features % OUTS, self.in_features)])
        groups = padded.view(padded.shape[0], -1, GROUP)
        scale = (groups.abs().amax(dim=-1) / 127).clamp(min=1e-12)
        codes = (groups / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
        self.tiles = _tiles(codes, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.specchat_cpu.q8_0_mm(x.reshape(-1, self.in_features), self.tiles)
        y = y[:, : self.out_features].view(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y
