"""A pass through every CPU layer in one operator call (kernels/layer/fused_layers.cpp).

Why: from Python each of a layer's eleven operator calls (and the cache views they
take) cost 1-2 us beside its work, ~0.4 ms of a 2.9 ms plain step of the embedded
target on a 2-core Zen 5 EPYC, paid again by every verify pass and draft step.
`fused_layers` calls the same operators in the same order from C++, so a pass gives
the bits the kernel route of CpuLayer.forward gives layer by layer.

It applies where every layer's products are block formats (Q4_1, Q8_0: each
product is its operator on the rows, `CpuLayer.direct`) and no layer has per-head
norms. A pass whose buffers must first be made or grown goes layer by layer
(decoder.run_layers), which makes them.
"""

from __future__ import annotations

import torch

from specchat.engine.cpu import int8_kv
from specchat.engine.model.kv_cache import KVCache

_Q8_0 = 1  # fused_layers' product kinds: 0 Q4_1, 1 Q8_0


class FusedLayers:
    """Callable on a pass's rows (x [rows, hidden] fp32, their rotation, `visible`):
    the hidden states after every layer, or None where the layers must run one by
    one. Build with `of`."""

    def __init__(self, layers, arguments: tuple) -> None:
        self.layers = layers
        self.arguments = arguments  # norms, eps, products, kinds: fixed with the weights

    @classmethod
    def of(cls, layers) -> FusedLayers | None:
        """For CpuLayers whose products are all block formats, where the operator is built."""
        if not len(layers) or not hasattr(torch.ops.specchat_cpu, "fused_layers") \
                or any(layer.direct is None or layer.qk_norms for layer in layers):
            return None
        norms, eps, products, kinds = [], [], [], []
        for layer in layers:
            for weight, epsilon in layer.norms:
                norms.append(weight)
                eps.append(float(epsilon))
            for op, tiles in layer.direct:
                products.append(tiles)
                kinds.append(_Q8_0 if op == torch.ops.specchat_cpu.q8_0_mm else 0)
        return cls(layers, (norms, eps, products, kinds))

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, visible: torch.Tensor,
                 cache: KVCache) -> torch.Tensor | None:
        start = self._claim_all(cache, x.shape[0])
        if start is None:
            return None
        first, layers = self.layers[0], cache.layers
        coded = first.coded  # an int8 cache: its scales and the key channel factors too
        return torch.ops.specchat_cpu.fused_layers(
            x, cos, sin, visible, start, first.heads, first.scale, *self.arguments,
            [c.keys for c in layers], [c.values for c in layers],
            [c.key_scales for c in layers] if coded else [], [c.value_scales for c in layers] if coded else [],
            [layer.channels for layer in self.layers] if coded else [])

    def _claim_all(self, cache: KVCache, count: int) -> int | None:
        """Every layer's claim of `count` positions (as CpuLayer.forward claims them for
        the kernels to write into), at one start; None, and nothing claimed, where a
        layer's buffers must first be made or grown."""
        first = self.layers[0]
        dtype = int8_kv.KEYS if first.coded else first.kv_dtype
        claimed = []  # (layer, its start)
        for cache_layer in cache.layers:
            start = cache_layer.claim(count, dtype)
            if start is not None:
                claimed.append((cache_layer, start))
            if start is None or start != claimed[0][1]:
                for layer, at in claimed:
                    layer.length = at  # given back
                return None
        return claimed[0][1] if claimed else None
