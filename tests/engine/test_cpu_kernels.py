"""specchat's CPU kernels (cpu/kernel_build.py): the attention of steps and verify passes
against softmax attention written out, each row independent of the others; the
Q8_0 and Q4_1 products keeping a GGUF file's weights, on either vector unit; and a failed
build reported, not raised."""

from __future__ import annotations


import pytest
import torch

from specchat.engine.cpu import kernel_build
from specchat.engine.cpu.quant.block_formats import GROUP, Q4_1Linear, Q8_0Linear

pytestmark = pytest.mark.skipif(not kernel_build.available(), reason="specchat's CPU kernels did not build here")


def _reference(q, keys, values, visible, scale):
    group = q.shape[0] // keys.shape[0]
    k = keys.float().repeat_interleave(group, 0)[:, : visible.shape[1]]
    v = values.float().repeat_interleave(group, 0)[:, : visible.shape[1]]
    scores = (q @ k.transpose(1, 2) * scale).masked_fill(~visible[None], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(0, 1).reshape(q.shape[1], -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128, 24])  # the vector path (32 | d) and the generic one
@pytest.mark.parametrize("held,heads", [(70, 6), (600, 6), (600, 14)])  # one chunk, several; groups of 3 and 7
def test_attention_rows_are_softmax_attention_each_over_what_it_sees(dtype, head_dim, held, heads):
    torch.manual_seed(0)
    kv_heads, capacity, rows = 2, 1024, 5
    keys = torch.randn(kv_heads, capacity, head_dim).to(dtype)
    values = torch.randn(kv_heads, capacity, head_dim).to(dtype)
    q = torch.randn(heads, rows, head_dim)
    visible = torch.ones(rows, held + rows, dtype=torch.bool).tril(held)
    visible[3, held + 2] = False  # a drafted alternative: beside the row before it, not after it
    out = torch.ops.specchat_cpu.attend_rows(q, keys, values, visible, 0.3)
    assert torch.allclose(out, _reference(q, keys, values, visible, 0.3), atol=1e-5)  # fp32 sums, either order
    for row in range(rows):  # a row's result does not depend on the rows beside it
        alone = torch.ops.specchat_cpu.attend_rows(q[:, row:row + 1].contiguous(), keys, values,
                                                   visible[row:row + 1].contiguous(), 0.3)
        assert torch.equal(alone, out[row:row + 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_row_depends_on_what_it_sees_not_where_it_sits_in_the_cache(dtype):
    """A drafted alternative's key sits past its siblings; a single step would have it
    right after the prefix. Both must give the same bits, across chunk boundaries."""
    torch.manual_seed(3)
    heads, kv_heads, capacity, held, head_dim = 6, 2, 1024, 530, 64
    keys = torch.randn(kv_heads, capacity, head_dim).to(dtype)
    values = torch.randn(kv_heads, capacity, head_dim).to(dtype)
    q = torch.randn(heads, 1, head_dim)
    scattered = torch.zeros(1, held + 4, dtype=torch.bool)
    scattered[0, :held] = True
    scattered[0, held + 3] = True  # the prefix and the alternative, three siblings between
    compact_keys, compact_values = keys.clone(), values.clone()
    compact_keys[:, held], compact_values[:, held] = keys[:, held + 3], values[:, held + 3]
    compact = torch.ones(1, held + 1, dtype=torch.bool)
    assert torch.equal(torch.ops.specchat_cpu.attend_rows(q, keys, values, scattered, 0.3),
                       torch.ops.specchat_cpu.attend_rows(q, compact_keys, compact_values, compact, 0.3))


def _has_avx2() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


@pytest.mark.skipif(not _has_avx2(), reason="needs a CPU with AVX2 and FMA")
def test_the_avx2_build_attends_alike(tmp_path):
    """The fleet's AVX2 EPYCs run the 8-lane path: built here with -march=haswell."""
    from torch.utils import cpp_extension

    source = kernel_build.KERNELS / "attention" / "attend_rows.cpp"
    flags = [f for f in kernel_build._FLAGS if f != "-march=native"] + ["-march=haswell",
                                                                       "-DSPECCHAT_LIBRARY=specchat_avx2_test"]
    cpp_extension.load(name="specchat_avx2_test", sources=[str(source)], extra_cflags=flags,
                       extra_ldflags=["-fopenmp"], build_directory=str(tmp_path), is_python_module=False,
                       verbose=False)
    attend = torch.ops.specchat_avx2_test.attend_rows
    torch.manual_seed(4)
    for dtype, head_dim, heads in [(torch.bfloat16, 64, 9), (torch.float32, 64, 9), (torch.bfloat16, 128, 21)]:
        keys = torch.randn(3, 1024, head_dim).to(dtype)
        values = torch.randn(3, 1024, head_dim).to(dtype)
        q = torch.randn(heads, 4, head_dim)
        visible = torch.ones(4, 604, dtype=torch.bool).tril(600)
        visible[2, 601] = False
        out = attend(q, keys, values, visible, 0.125)
        assert torch.allclose(out, _reference(q, keys, values, visible, 0.125), atol=1e-5)
        for row in range(4):
            assert torch.equal(attend(q[:, row:row + 1].contiguous(), keys, values,
                                      visible[row:row + 1].contiguous(), 0.125), out[row:row + 1])
    # an int8 cache (cpu/int8_kv.py): the scalar key scores and 8-lane values, against this machine's build
    from specchat.engine.cpu.int8_kv import to_codes, write_keys

    key_codes, key_scales = to_codes(torch.randn(1, 3, 604, 64))
    value_codes, value_scales = to_codes(torch.randn(1, 3, 604, 64))
    tiles = torch.zeros(1, 3, 1024, 64, dtype=torch.uint8)
    write_keys(tiles, 0, key_codes)
    values = torch.zeros(1, 3, 1024, 64, dtype=torch.int8)
    values[..., :604, :] = value_codes
    scales = [torch.zeros(3, 1024) for _ in range(2)]
    scales[0][:, :604], scales[1][:, :604] = key_scales[0], value_scales[0]
    q = torch.randn(9, 4, 64)
    args = (q, tiles[0], values[0], visible, 0.125, *scales)
    out = attend(*args)
    # an AVX-512 VNNI build weighs the values by int16 codes of the weights (int8_values.h): 3e-5 apart here
    assert torch.allclose(out, torch.ops.specchat_cpu.attend_rows(*args), atol=1e-4)
    for row in range(4):
        one = (q[:, row:row + 1].contiguous(), tiles[0], values[0], visible[row:row + 1].contiguous(), 0.125, *scales)
        assert torch.equal(attend(*one), out[row:row + 1])


def test_q8_0_finds_the_8_bit_codes_of_a_q8_0_file():
    torch.manual_seed(1)
    scale = (torch.rand(64, 4, 1) * 0.01 + 0.001).half().float()  # GGUF keeps scales in fp16
    codes = torch.randint(-127, 128, (64, 4, GROUP)).float()
    codes[..., 0] = 127  # each block spans its scale, as llama.cpp's quantizer writes it
    weights = (scale * codes).view(64, 4 * GROUP)
    columns = Q8_0Linear(weights, None)(torch.eye(4 * GROUP))  # one-hot inputs are exact in int8
    assert torch.allclose(columns.T, weights, rtol=1e-5, atol=1e-7)


def test_a_layer_of_any_width_keeps_its_outputs():
    torch.manual_seed(2)
    weights, bias = torch.randn(7, GROUP), torch.randn(7)
    layer = Q8_0Linear(weights, bias)  # outputs padded to tiles of sixteen inside, cut off after
    x = torch.randn(3, GROUP)
    assert layer(x).shape == (3, 7)
    assert torch.allclose(layer(x), x @ weights.T + bias, atol=0.1)  # int8 rounding of both sides


def test_a_build_that_fails_is_a_reason_not_an_error(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(kernel_build, "_SOURCES", [broken])
    monkeypatch.setattr(kernel_build, "built", lambda: False)
    monkeypatch.setenv("SPECCHAT_CACHE_DIR", str(tmp_path / "cache"))
    reason = kernel_build.why_unavailable.__wrapped__()
    assert isinstance(reason, str) and reason


def _q4_1_file_weights(rows: int, cols: int) -> torch.Tensor:
    """Per block of 32, d * q + m with q in 0..15 spanning the block and d, m in fp16,
    as llama.cpp's Q4_1 stores them."""
    torch.manual_seed(3)
    d = (torch.rand(rows, cols // GROUP, 1) * 0.02 + 0.01).half().float()
    m = (-torch.rand(rows, cols // GROUP, 1) * 0.05).half().float()
    q = torch.randint(0, 16, (rows, cols // GROUP, GROUP)).float()
    q[..., 0], q[..., 1] = 0, 15
    return (d * q + m).view(rows, cols)


def test_q4_1_finds_the_4_bit_blocks_of_a_q4_1_file():
    weights = _q4_1_file_weights(40, 4 * GROUP)
    columns = Q4_1Linear(weights, None)(torch.eye(4 * GROUP))  # one-hot inputs are exact
    assert torch.allclose(columns.T, weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [Q4_1Linear, Q8_0Linear])
def test_a_block_product_is_the_float_product_to_the_activations_rounding(make):
    """Two int8 codes an input keep ~16 bits of it: far closer than bf16's 8."""
    weights = _q4_1_file_weights(50, 6 * GROUP)  # 50 outputs: tiles of 16 padded inside
    x = torch.randn(11, 6 * GROUP)
    y = make(weights, None)(x)
    reference = x.double() @ make(weights, None)(torch.eye(6 * GROUP)).double()
    assert y.shape == (11, 50)
    assert torch.allclose(y.double(), reference, atol=1e-3 * reference.abs().max())


def test_the_avx2_build_computes_the_block_products_alike(tmp_path):
    """The fleet's AVX2 EPYCs run two halves of eight lanes and maddubs for the
    integer products: built here with -march=haswell."""
    from torch.utils import cpp_extension

    kernels = kernel_build.KERNELS / "quants"
    flags = [f for f in kernel_build._FLAGS if f != "-march=native"] + ["-march=haswell",
                                                                       "-DSPECCHAT_LIBRARY=specchat_avx2_blocks"]
    cpp_extension.load(name="specchat_avx2_blocks", sources=[str(kernels / "q8_0.cpp"), str(kernels / "q4_1.cpp")],
                       extra_cflags=flags, extra_ldflags=["-fopenmp"], build_directory=str(tmp_path),
                       is_python_module=False, verbose=False)
    weights = _q4_1_file_weights(48, 6 * GROUP)
    x = torch.randn(7, 6 * GROUP)
    for layer, op in [(Q4_1Linear(weights, None), torch.ops.specchat_avx2_blocks.q4_1_mm),
                      (Q8_0Linear(weights, None), torch.ops.specchat_avx2_blocks.q8_0_mm)]:
        together = op(x, layer.tiles)
        assert torch.allclose(together, layer(x), rtol=1e-5, atol=1e-5)
        for row in range(7):  # 7 rows: a group of four and one of three
            assert torch.equal(op(x[row:row + 1], layer.tiles), together[row:row + 1])


def test_a_build_on_disk_is_known_before_loading_so_a_start_does_not_announce_a_build(tmp_path, monkeypatch):
    assert kernel_build.compiled()  # loaded above: its library sits in the user cache
    monkeypatch.setattr(kernel_build, "_build_directory", lambda: tmp_path)  # sources never built here
    assert not kernel_build.compiled()
