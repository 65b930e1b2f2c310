"""Linear layers as fbgemm fp16 GEMMs: the fast CPU path for verifying drafts.

Why this exists: on a CPU without bf16 matrix units (most of them), a bf16 linear
layer over M rows costs about M single-row products, so verifying k drafted tokens
costs nearly k + 1 decoding steps and speculation can hardly pay; fp32 weights scale
better with M but read twice the bytes on every step. fbgemm's fp16 GEMM (in every
x86 PyTorch build) keeps the weights in fp16 and computes in fp32: a single step
costs about what bf16 does, and a pass over 8 tokens about what one token does.
Measured on SmolLM2-135M (2-core EPYC, 200-token context), one target pass over
1 / 2 / 5 / 8 tokens: bf16 55 / 59 / 121 / 172 ms, fp32 82 / 146 / 169 / 182 ms,
fp16-packed 59 / 61 / 53 / 64 ms.

It is also more faithful than bf16: fp16 keeps 3 more mantissa bits of each weight
and the arithmetic is fp32, so each output row depends on its own input row alone
up to fp32 rounding (~1e-6): a verify pass sees the logits single steps would.

Inference only (no gradients); CPU only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch
from torch import nn


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this torch build and CPU run fbgemm's fp16 GEMM (x86 with AVX2)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return False
    try:  # the build may still lack the ops; try them on one small layer
        Fp16PackedLinear.from_linear(nn.Linear(8, 8))(torch.ones(2, 8))
    except (RuntimeError, AttributeError):
        return False
    return True


class Fp16PackedLinear(nn.Module):
    """y = x W^T + b with W packed as fp16 for fbgemm; x and y are fp32."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        bias = None if bias is None else bias.detach().float().contiguous()
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp16PackedLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp16 packed"


class LazyFp16PackedLinear(Fp16PackedLinear):
    """An Fp16PackedLinear packed on its first call, for a model kept as a fallback: a
    target whose CPU decoder runs every pass never calls it, and packing the embedded
    target's 212 layers took ~1 s of each load (2-core EPYC). Until then the weight
    waits as fp16, the values packing keeps (so the same bits, and the same memory)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        nn.Module.__init__(self)
        self.out_features, self.in_features = weight.shape
        self._waiting = (weight.detach().to(torch.float16), None if bias is None else bias.detach().float().contiguous())
        self._packed = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            weight, bias = self._waiting
            self._packed = torch.ops.quantized.linear_prepack_fp16(weight.float().contiguous(), bias)
            self._waiting = None
        return super().forward(x)


def replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    """Swap every nn.Linear inside `module` for `make(linear)`, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, make(child))
    return module


def pack_fp16(module: nn.Module, lazy: bool = False) -> nn.Module:
    """Every linear layer of a CPU float32 module as an fbgemm fp16 GEMM, in place;
    lazy: each packed on its first call (LazyFp16PackedLinear)."""
    return replace_linears(module, (LazyFp16PackedLinear if lazy else Fp16PackedLinear).from_linear)
