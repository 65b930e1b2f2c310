"""Block weights moved into huge pages (cpu/huge_pages.py): the same bytes, read by the
same layers, wherever the memory comes from."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from specchat.engine.cpu import huge_pages
from specchat.engine.cpu.quant import weight_formats
from specchat.engine.cpu.quant.block_formats import block_weights
from specchat.engine.cpu.quant.weight_formats import GROUP

BLOCKED = [name for name in ("q4_1", "q8_0") if weight_formats.available(name)]


def _anon_huge_kb() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(not BLOCKED, reason="specchat's CPU kernels are not built here")
def test_layers_give_the_same_outputs_from_their_moved_weights():
    torch.manual_seed(0)
    model = nn.Sequential(*(weight_formats.maker(name)(torch.randn(48 * 16, 8 * GROUP) * 0.1, None)
                            for name in BLOCKED for _ in range(2)))
    tiles = block_weights(model)
    assert len(tiles) == len(model) and block_weights(None) == []
    x = torch.randn(3, 8 * GROUP)
    before = [layer(x) for layer in model]
    copies = [t.clone() for t in tiles]
    pointers = [t.data_ptr() for t in tiles]
    moved = huge_pages.into_huge_pages(tiles)
    # The layers hold the very tensors that moved: same bytes, new memory where it moved.
    assert all(torch.equal(t, c) for t, c in zip(block_weights(model), copies))
    assert moved == all(t.data_ptr() != p for t, p in zip(tiles, pointers))
    assert all(torch.equal(layer(x), out) for layer, out in zip(model, before))
    if moved:  # one buffer, each tensor at its own aligned place in it
        starts = sorted(t.data_ptr() for t in tiles)
        assert all(start % 64 == 0 for start in starts)
        assert all(b - a >= t.numel() for a, b, t in zip(starts, starts[1:], tiles))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are Linux's")
def test_the_system_backs_the_moved_weights_with_huge_pages_where_it_offers_them():
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("transparent huge pages are off on this machine")
    weights = [torch.randint(0, 255, (8 << 20,), dtype=torch.uint8) for _ in range(2)]
    before = _anon_huge_kb()
    assert huge_pages.into_huge_pages(weights)
    assert _anon_huge_kb() - before >= 8 << 10  # at least half of the 16 MB moved
