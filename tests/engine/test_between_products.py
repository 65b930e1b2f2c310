"""specchat's kernels for the steps between a CPU layer's products (kernels/layer/between_products.cpp):
RMSNorm and silu(gate) * up as torch computes them, each row alone; the rotation of
queries and keys bit for bit the torch path's, written into the cache where
`PreallocatedLayer.claim` says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from specchat.engine.cpu import kernel_build
from specchat.engine.model.rotation_table import rotate
from specchat.engine.model.kv_cache import PreallocatedLayer

pytestmark = pytest.mark.skipif(not kernel_build.available(), reason="specchat's CPU kernels did not build here")


@pytest.mark.parametrize("width", [576, 37])  # a multiple of the kernel's lanes, and not
def test_rms_norm_is_torchs_each_row_alone(width):
    torch.manual_seed(0)
    x, weight = torch.randn(5, width) * 3, torch.randn(width)
    out = torch.ops.specchat_cpu.rms_norm(x, weight, 1e-5, False)
    assert torch.allclose(out, F.rms_norm(x, (width,), weight, 1e-5), rtol=1e-5, atol=1e-6)
    for row in range(5):
        assert torch.equal(torch.ops.specchat_cpu.rms_norm(x[row:row + 1], weight, 1e-5, False), out[row:row + 1])
    # in bf16 for a product that takes bf16: the values its own cast would make
    assert torch.equal(torch.ops.specchat_cpu.rms_norm(x, weight, 1e-5, True), out.bfloat16())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_silu_mul_is_torchs(dtype):
    torch.manual_seed(1)
    gate_up = (torch.randn(3, 2 * 100) * 4).to(dtype)  # 100: whole vectors and a scalar rest
    gate_up[0, :4] = torch.tensor([-200.0, -90.0, 90.0, 200.0])  # e^-g far past fp32's range
    gate, up = gate_up.float().split(100, dim=-1)
    out = torch.ops.specchat_cpu.silu_mul(gate_up, False)
    assert torch.allclose(out, F.silu(gate) * up, rtol=1e-6, atol=1e-6)
    assert torch.equal(torch.ops.specchat_cpu.silu_mul(gate_up, True), out.bfloat16())


@pytest.mark.parametrize("qkv_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_rotation_into_the_cache_is_the_torch_paths_bit_for_bit(qkv_dtype, cache_dtype):
    torch.manual_seed(2)
    heads, kv_heads, d, t, held = 6, 2, 16, 3, 5
    qkv = torch.randn(t, (heads + 2 * kv_heads) * d).to(qkv_dtype)
    angles = torch.rand(t, d // 2) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    layer = PreallocatedLayer()
    layer.update(torch.zeros(1, kv_heads, held, d, dtype=cache_dtype), torch.zeros(1, kv_heads, held, d, dtype=cache_dtype))
    layer.reserve(held + t)
    start = layer.claim(t, cache_dtype)
    assert start == held and layer.length == held + t
    queries = torch.ops.specchat_cpu.rotate_into_cache(qkv, cos, sin, layer.keys[0], layer.values[0], start, heads)

    # the torch path (CpuLayer.forward without the kernels)
    split = qkv.float().view(t, -1, d)
    qk, v = split[:, : heads + kv_heads], split[:, heads + kv_heads:]
    qk = rotate(qk, cos[:, None], sin[:, None]).transpose(0, 1)
    assert torch.equal(queries, qk[:heads].contiguous())
    assert torch.equal(layer.keys[0, :, held:held + t], qk[heads:].to(cache_dtype))
    assert torch.equal(layer.values[0, :, held:held + t], v.transpose(0, 1).to(cache_dtype))


def test_a_claim_waits_for_buffers_of_the_right_kind_and_room():
    layer = PreallocatedLayer()
    assert layer.claim(1, torch.float32) is None  # no buffers yet: update makes them
    layer.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    assert layer.claim(1, torch.bfloat16) is None  # another dtype: update remakes them
    assert layer.claim(layer.capacity, torch.float32) is None  # no room: update grows them
    assert layer.length == 3
    assert layer.claim(2, torch.float32) == 3 and layer.length == 5
