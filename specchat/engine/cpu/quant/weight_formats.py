"""The formats a linear layer's weights can take on the CPU, and what each needs.

Every format here computes each output row from its own input row alone (checked
bit for bit in tests/engine/test_weight_formats.py), so a verify pass over k + 1
tokens gives the logits k + 1 single steps would: greedy speculation stays
identical to plain decoding whatever the format.

- fp32: plain weights, where no other format applies (Fp32Linear: row by row in
  a verify pass).
- fp16: fbgemm's fp16 GEMM (cpu/quant/fp16_linear.py); fp32 arithmetic.
- int8: one int8 per weight, one scale per output row (`_weight_int8pack_mm`),
  bf16 activations.
- int4: 4 bits per weight with a scale and an offset per group of 32 inputs
  (`_weight_int4pack_mm_for_cpu`), bf16 activations. That is the GGUF Q4_1 layout:
  a Q4_1 block's lowest weight is its offset and its highest offset + 15 scales,
  so requantizing the dequantized file finds the same 4-bit codes.
- int4-q8head: int4 layers, and the output layer in q8_0, GGUF's 8-bit blocks,
  against int8 activations, by specchat's own kernel (cpu/quant/block_formats.py).
- q4_1: the same 4-bit blocks and the q8_0 output layer, both by specchat's own
  kernels against activations as two int8 codes per block (cpu/quant/block_formats.py): the
  weights' bytes read once per pass whatever its rows, fp32 activations.

Which one is fastest depends on the CPU (memory bandwidth, AVX-512 or AVX2) and is
measured at first load (cpu/format_choice.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from specchat.engine.cpu.quant.block_formats import GROUP, Q4_1Linear, Q8_0Linear, q4_1_blocks
from specchat.engine.cpu.quant.fp16_linear import Fp16PackedLinear
from specchat.engine.cpu.quant.fp16_linear import available as fp16_available

MakeLinear = Callable[[torch.Tensor, "torch.Tensor | None"], nn.Module]


class _BiasMixin:
    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        """The kernel's bf16 output as it is (an fp32 residual add promotes it exactly,
        one cast fewer), or fp32 with the bias added."""
        return y.float() + self.bias if self.bias is not None else y


class Int8Linear(_BiasMixin, nn.Module):
    """y = x W^T + b, W as int8 with a per-row scale; x fp32, y bf16 (fp32 with a bias)."""

    takes_bf16 = True  # x is rounded to bf16 first: a caller may hand it over in bf16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        self.out_features, self.in_features = weight.shape
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.codes = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
        self.scale = scale.bfloat16()
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(torch.ops.aten._weight_int8pack_mm(x.bfloat16(), self.codes, self.scale))


class Int4Linear(_BiasMixin, nn.Module):
    """y = x W^T + b, W as 4-bit codes with a scale and offset per GROUP inputs."""

    takes_bf16 = True  # x is rounded to bf16 first: a caller may hand it over in bf16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        codes, scale, low = q4_1_blocks(weight)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # the kernel computes (code - 8) * scale + zero: zero = offset + 8 scales
        self.scale_zero = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous().bfloat16()
        self.bias = None if bias is None else bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), self.packed, GROUP,
                                                                       self.scale_zero))


class Fp32Linear(nn.Linear):
    """Plain fp32 weights, for layers no other format takes. A BLAS product over a
    few rows sums in another order than over one, so a verify pass's rows (up to
    VERIFY_ROWS) are computed one by one, as single steps compute them."""

    VERIFY_ROWS = 16

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=bias is not None)
        self.weight.data = weight.detach().float().contiguous()
        if bias is not None:
            self.bias.data = bias.detach().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # a bf16 attention output, where the other layers are int4
        if 1 < x.shape[0] <= self.VERIFY_ROWS:
            return torch.cat([F.linear(row, self.weight, self.bias) for row in x.split(1)])
        return F.linear(x, self.weight, self.bias)


FORMATS: dict[str, MakeLinear] = {"fp16": Fp16PackedLinear, "int8": Int8Linear, "int4": Int4Linear,
                                  "int4-q8head": Int4Linear, "q4_1": Q4_1Linear, "q8_0": Q8_0Linear,
                                  "fp32": Fp32Linear}
# The output layer's format for each layers' format that has its own (else fp16)
HEADS = {"int4-q8head": "q8_0", "q4_1": "q8_0"}


# Formats whose activations are rounded to bf16 or coarser: a verify pass must attend
# by exact rows to give single steps' logits bit for bit (decoder.CpuDecoder, exact).
BF16_ACTIVATIONS = frozenset({"int8", "int4", "int4-q8head"})
# Formats whose KV cache is bf16: those above, whose next product rounds the attention's
# output to bf16 anyway, and q4_1, where a bf16 cache costs KL ~2e-5 (fp32: ~5e-7)
# and after a long document halves what a step reads.
BF16_CACHE = BF16_ACTIVATIONS | {"q4_1"}
_BLOCKED = frozenset({"int4", "int4-q8head", "q4_1", "q8_0"})  # weights in groups of GROUP inputs


def fits(name: str, in_features: int) -> bool:
    """Whether a layer of this width can take the format (groups must divide it)."""
    return name not in _BLOCKED or in_features % GROUP == 0


@lru_cache(maxsize=None)
def available(name: str) -> bool:
    """Whether this torch build and CPU run the format (tried on one small layer)."""
    if name == "fp16":
        return fp16_available()
    if name in HEADS and not available(HEADS[name]):
        return False
    try:
        layer = FORMATS[name](torch.randn(16, 2 * GROUP), None)
        return bool(torch.isfinite(layer(torch.ones(2, 2 * GROUP))).all())
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def maker(name: str) -> MakeLinear:
    """A factory for the format that falls back to fp32 for layers it cannot take."""
    make = FORMATS[name]
    return lambda weight, bias: make(weight, bias) if fits(name, weight.shape[1]) else Fp32Linear(weight, bias)
