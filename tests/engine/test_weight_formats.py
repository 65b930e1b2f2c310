"""The weight formats of the CPU decoder (cpu/quant/weight_formats.py): each output row from
its own input row alone, bit for bit, and int4 keeping a Q4_1 file's weights."""

from __future__ import annotations

import pytest
import torch

from specchat.engine.cpu.quant import weight_formats
from specchat.engine.cpu.quant.weight_formats import FORMATS, GROUP, Int4Linear

AVAILABLE = [name for name in FORMATS if weight_formats.available(name)]


@pytest.mark.parametrize("name", AVAILABLE)
def test_each_row_of_a_pass_is_what_the_row_alone_gives(name):
    torch.manual_seed(0)
    layer = weight_formats.maker(name)(torch.randn(96, 4 * GROUP) * 0.1, torch.randn(96))
    rows = torch.randn(9, 4 * GROUP)
    for m in (2, 4, 5, 9):  # kernels block rows by 4 or 8: sizes on and off those blocks
        together = layer(rows[:m])
        alone = torch.cat([layer(rows[i:i + 1]) for i in range(m)])
        assert torch.equal(together, alone), f"{name}: a pass of {m} rows differs from single rows"


def _q4_1_weights(rows: int, cols: int) -> torch.Tensor:
    """Weights as llama.cpp's Q4_1 stores them: per block of 32, d * q + m with q in
    0..15 spanning the block (its lowest value is m, its highest m + 15 d)."""
    torch.manual_seed(1)
    d = torch.rand(rows, cols // GROUP, 1) * 0.02 + 0.01
    m = -torch.rand(rows, cols // GROUP, 1) * 0.05
    q = torch.randint(0, 16, (rows, cols // GROUP, GROUP)).float()
    q[..., 0], q[..., 1] = 0, 15
    return (d * q + m).view(rows, cols)


@pytest.mark.skipif("int4" not in AVAILABLE, reason="this torch build has no CPU int4 kernel")
def test_int4_finds_the_4_bit_codes_of_a_q4_1_file():
    weights = _q4_1_weights(64, 4 * GROUP)
    columns = Int4Linear(weights, None)(torch.eye(4 * GROUP))  # one-hot inputs read back each weight
    # bf16 rounding of scale, offset and output: < 0.004 here; one code off would be >= d >= 0.01.
    assert (columns.T - weights).abs().max() < 0.004


def test_a_layer_int4_cannot_group_falls_back_to_fp32():
    odd = weight_formats.maker("int4")(torch.randn(8, GROUP + 3), None)
    assert isinstance(odd, weight_formats.Fp32Linear)
