"""GGUF's block formats computed by integer dot products against activations
quantized per block of 32 inputs (two int8 codes each, kernels/common/activation_codes.h):

- Q8_0 (kernels/quants/q8_0.cpp): int8 codes with a scale per 32 inputs;
- Q4_1 (kernels/quants/q4_1.cpp): 4-bit codes with a scale and an offset per 32 inputs.

Why: torch has no 8-bit block kernel, so the output layer stayed fp16, a quarter of
the embedded model's bytes read a step. Its GGUF stores that layer (the tied
embedding) in Q8_0: requantizing the dequantized file finds the same codes, so only
the activations are rounded (to int8, as llama.cpp rounds them). It is the output
layer of the int4-q8head and q4_1 formats (cpu/quant/weight_formats.py). The layers' Q4_1
codes come back from the dequantized file the same way (q4_1_blocks);
torch's int4 kernel takes them too, but reads them at ~2/3 of the machine's
bandwidth and a pass's rows four at a time. Fidelity is measured like any other
format's at first load (cpu/format_choice.py).

The kernels are built on first use (cpu/kernel_build.py); where they cannot be, the
format is unavailable and the others remain (weight_formats.available).
"""

from __future__ import annotations

import torch
from torch import nn

from specchat.engine.cpu.kernel_build import why_unavailable

GROUP = 32  # inputs per block, as in GGUF's Q4_1 and Q8_0
TILE_OUTS = 16  # outputs per tile (kernels/quants/block_tiles.h)
# A scale for an all-zero block (padding): nonzero, so codes are 0, not 0 / 0
_SMALLEST = {torch.float32: 1e-12, torch.float16: 2.0 ** -24}


def q8_0_tiles(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """codes int8 [out, in], scale fp32 [out, in / GROUP] (out a multiple of TILE_OUTS)
    -> uint8 [out / TILE_OUTS, blocks, 544]: per tile and block eight groups of 64
    bytes, byte 4 o + i of group g holding input 4 g + i of output o; then the scales
    as fp16 (kernels/quants/q8_0.cpp)."""
    out_features, in_features = codes.shape
    blocks = in_features // GROUP
    grouped = codes.view(torch.uint8).view(-1, TILE_OUTS, blocks, 8, 4).permute(0, 2, 3, 1, 4)
    return torch.cat([grouped.reshape(-1, blocks, 8 * TILE_OUTS * 4), _halves(scale)], dim=-1).contiguous()


def q4_1_blocks(weight: torch.Tensor, kept_as: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes 0..15 [out, in], scale [out, in / 32], offset [out, in / 32]) with
    weight ≈ scale * code + offset: a Q4_1 block's lowest weight is its offset and its
    highest offset + 15 scales, so a Q4_1 file's codes come back as they were. Scale
    and offset are rounded to `kept_as` (the dtype a kernel reads them in) before the
    codes are found, so other weights are rounded against what the kernel uses."""
    out_features = weight.shape[0]
    groups = weight.detach().float().reshape(out_features, -1, GROUP)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15).to(kept_as).float().clamp(min=_SMALLEST[kept_as])
    low = low.to(kept_as).float()
    codes = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
    return codes.view(out_features, -1), scale, low


def _require_kernels() -> None:
    reason = why_unavailable()
    if reason is not None:
        raise RuntimeError(f"specchat's block kernels are unavailable: {reason}")


def _padded(weight: torch.Tensor, outs: int) -> torch.Tensor:
    """fp32 weights with zero rows added up to a multiple of `outs` outputs."""
    weight = weight.detach().float()
    return torch.cat([weight, weight.new_zeros(-weight.shape[0] % outs, weight.shape[1])])


def q4_1_tiles(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """codes 0..15 [out, in], scale and offset fp32 [out, in / GROUP] (out a multiple
    of TILE_OUTS) -> uint8 [out / TILE_OUTS, blocks, 320]: per tile and block four chunks of
    64 bytes, byte 4 o + i of chunk c holding input 4 c + i of output o in its low
    nibble and input 16 + 4 c + i in its high one; then the scales, then the offsets,
    as fp16 (kernels/quants/q4_1.cpp)."""
    out_features, in_features = codes.shape
    blocks = in_features // GROUP
    # [tiles, outs, blocks, 8 groups of 4 inputs] -> [tiles, blocks, group, outs, 4]
    grouped = codes.to(torch.uint8).view(-1, TILE_OUTS, blocks, 8, 4).permute(0, 2, 3, 1, 4)
    packed = (grouped[:, :, :4] | (grouped[:, :, 4:] << 4)).reshape(-1, blocks, 4 * TILE_OUTS * 4)

    return torch.cat([packed, _halves(scale), _halves(offset)], dim=-1).contiguous()


def _halves(values: torch.Tensor) -> torch.Tensor:
    """fp32 [out, blocks] -> the bytes of fp16 [out / TILE_OUTS, blocks, TILE_OUTS]."""
    blocks = values.shape[1]
    return values.view(-1, TILE_OUTS, blocks).transpose(1, 2).contiguous().half().view(torch.uint8)


class Q4_1Linear(nn.Module):
    """y = x W^T + b: W as Q4_1 blocks (4-bit codes, a scale and an offset per 32
    inputs), x as two int8 codes per block; fp32 in and out. Outputs are padded to a
    multiple of TILE_OUTS with zero weights and cut off after the product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        _require_kernels()
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float()
        self.tiles = q4_1_tiles(*q4_1_blocks(_padded(weight, TILE_OUTS), kept_as=torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.specchat_cpu.q4_1_mm(x.reshape(-1, self.in_features), self.tiles)
        y = y[:, : self.out_features].view(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y


class Q8_0Linear(nn.Module):
    """y = x W^T + b: W as Q8_0 blocks (int8 codes, a scale per 32 inputs), x int8 per
    block; fp32 out. Outputs are padded to a multiple of TILE_OUTS with zero weights inside
    and cut off after the product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        _require_kernels()
        self.out_features, self.in_features = weight.shape
        self.bias = None if bias is None else bias.detach().float()
        padded = _padded(weight, TILE_OUTS)
        groups = padded.view(padded.shape[0], -1, GROUP)
        # the scale as the kernel reads it (fp16, as GGUF keeps it) before the codes are found
        scale = (groups.abs().amax(dim=-1) / 127).half().float().clamp(min=_SMALLEST[torch.float16])
        codes = (groups / scale[..., None]).round().clamp(-127, 127).to(torch.int8)
        self.tiles = q8_0_tiles(codes.view(padded.shape[0], -1), scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.specchat_cpu.q8_0_mm(x.reshape(-1, self.in_features), self.tiles)
        y = y[:, : self.out_features].view(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y


def block_weights(module: nn.Module | None) -> list[torch.Tensor]:
    """The tiles of every Q4_1 and Q8_0 layer in `module` (none for None)."""
    if module is None:
        return []
    return [m.tiles for m in module.modules() if isinstance(m, (Q4_1Linear, Q8_0Linear))]
