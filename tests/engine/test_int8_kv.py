"""The int8 KV cache (cpu/int8_kv.py, kernels/attention/int8_keys.h): its layout in the cache,
the kernel against sdpa over the same codes, and speculation on it staying exact."""

from __future__ import annotations

import pytest
import torch

from specchat.engine.cpu import decoder as cpu_decoder, format_choice, int8_kv, kernel_build
from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.protocol import Alternative
from specchat.engine.loop.alternatives import forward_with_alternatives
from specchat.engine.model.forward import forward_logits, new_cache
from specchat.engine.model.kv_cache import KVCache, PreallocatedLayer

from .families import build
from .helpers import assert_greedy_lossless_with_every_drafter, assert_sampling_keeps_the_distribution, word_tokenizer

pytestmark = pytest.mark.skipif(not kernel_build.available(), reason="the int8 cache is read by specchat's kernels")

VOCAB = 64
PROMPT = [(7 * i + 3) % VOCAB for i in range(20)] * 2


def coded_layer(keys: torch.Tensor, values: torch.Tensor) -> PreallocatedLayer:
    layer = PreallocatedLayer()
    for start in range(0, keys.shape[-2], 200):  # in pieces, growing past a chunk
        k, ks = int8_kv.to_codes(keys[..., start:start + 200, :])
        v, vs = int8_kv.to_codes(values[..., start:start + 200, :])
        layer.update_codes(k, ks, v, vs)
    return layer


def test_keys_written_in_tiles_read_back_across_growth_and_moves():
    torch.manual_seed(0)
    keys, values = torch.randn(1, 2, 700, 32), torch.randn(1, 2, 700, 32)
    layer = coded_layer(keys, values)
    assert layer.coded and layer.length == 700 and layer.allocations == 2  # 512, then 1,024 positions
    codes, scales = int8_kv.to_codes(keys)
    assert torch.equal(int8_kv.read_keys(layer.keys, 700), codes) and torch.equal(layer.key_scales[..., :700], scales)
    layer.move(torch.tensor([650, 651]), torch.tensor([17, 18]))  # an accepted alternative moving up
    moved = int8_kv.read_keys(layer.keys, 700)
    assert torch.equal(moved[..., 17:19, :], codes[..., 650:652, :])
    assert torch.equal(layer.key_scales[..., 17:19], scales[..., 650:652])
    dequantized, _ = int8_kv.dequantized(layer, torch.ones(2, 32))
    assert torch.allclose(dequantized[..., :17, :], keys[..., :17, :], atol=0.03)


def test_a_cache_holding_floats_does_not_take_codes():
    layer = PreallocatedLayer()
    layer.update(torch.randn(1, 2, 5, 32), torch.randn(1, 2, 5, 32))
    k, ks = int8_kv.to_codes(torch.randn(1, 2, 1, 32))
    with pytest.raises(ValueError, match="another KV format"):
        layer.update_codes(k, ks, k, ks)
    assert layer.length == 5 and layer.keys.dtype == torch.float32  # untouched


# head sizes the value kernel takes in 1, 2 and 4 spans of 32; odd counts leave a last
# position without a partner; past 256 positions a row has more than one chunk
@pytest.mark.parametrize("d, n", [(64, 300), (32, 7), (128, 601)])
def test_the_kernel_over_codes_is_sdpa_over_what_they_stand_for(d, n):
    torch.manual_seed(1)
    heads, kv = 6, 2
    keys = torch.randn(1, kv, n, d) * torch.linspace(0.2, 4.0, d)  # channels of different sizes
    values = torch.randn(1, kv, n, d) * torch.rand(1, kv, n, 1) * 3  # rows of different sizes: their own scales
    layer = coded_layer(keys, values)
    queries = torch.randn(heads, 2, d)
    visible = torch.ones(2, n, dtype=torch.bool)
    visible[1, n // 3] = False  # a drafted alternative's row skips a position: the picked path
    out = torch.ops.specchat_cpu.attend_rows(queries, layer.keys[0], layer.values[0], visible, 0.125,
                                             layer.key_scales[0], layer.value_scales[0])
    k, v = int8_kv.dequantized(layer, torch.ones(kv, d))
    for row in range(2):
        mask = torch.where(visible[row], 0.0, float("-inf"))[None, None, None]
        expected = torch.nn.functional.scaled_dot_product_attention(queries[None, :, row:row + 1], k, v, attn_mask=mask,
                                                                    scale=0.125, enable_gqa=True)
        # the queries' two codes, the values' weights as int16 codes (int8_values.h)
        assert torch.allclose(out[row], expected[0, :, 0].reshape(-1), atol=5e-4)
    alone = torch.ops.specchat_cpu.attend_rows(queries[:, 1:].contiguous(), layer.keys[0], layer.values[0],
                                               visible[1:].contiguous(), 0.125, layer.key_scales[0],
                                               layer.value_scales[0])
    assert torch.equal(alone[0], out[1])  # a row's result does not depend on the others


def coded(model):
    return format_choice.build(model, "q4_1", "int8", PROMPT)


@pytest.mark.parametrize("family", ["llama", "qwen3"])  # qwen3: per-head norms, written by torch not the kernel
def test_verify_passes_and_alternatives_are_bit_for_bit_the_single_steps(family):
    model = build(family, VOCAB, hidden=128, window=None, head_dim=32)
    decoder = coded(model)
    assert not torch.equal(decoder.body.layers[0].channels, torch.ones_like(decoder.body.layers[0].channels))
    cache = new_cache(model)
    decoder.logits(PROMPT, cache, keep=1)
    assert cache.layers[0].coded
    run = [9, 4, 33, 2, 60]
    together = decoder.logits(run, cache, keep=len(run))
    cache.truncate(len(PROMPT))
    alone = torch.cat([decoder.logits([token], cache, keep=1) for token in run])
    assert torch.equal(together, alone)
    cpu_decoder.attach(model, decoder)
    try:
        cache.truncate(len(PROMPT) - 1)
        rows = forward_with_alternatives(model, cache, PROMPT[-1], [9, 4], [Alternative(1, 50, 0.2)])
        cache.truncate(len(PROMPT) - 1)
        steps = torch.cat([forward_logits(model, cache, [token], keep=1) for token in (PROMPT[-1], 9, 50)])
        assert torch.equal(rows[:2], steps[:2]) and torch.equal(rows[3], steps[2])
    finally:
        cpu_decoder.attach(model, None)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_speculation_on_an_int8_cache_is_plain_decoding_with_every_drafter(family):
    target = build(family, VOCAB, seed=0, hidden=128, window=None)
    cpu_decoder.attach(target, coded(target))
    small_model = build(family, VOCAB, seed=5, layers=1, window=None)
    assert_greedy_lossless_with_every_drafter(target, small_model, PROMPT, VOCAB, family)


def test_sampling_on_an_int8_cache_keeps_the_target_distribution():
    vocab = 12
    target = build("llama", vocab, seed=0, hidden=128, window=None)
    decoder = format_choice.build(target, "q4_1", "int8", [3, 1, 4, 1, 5, 9, 2, 6])
    cpu_decoder.attach(target, decoder)
    drafter = ModelDrafter(build("llama", vocab, seed=7, layers=1, window=None), "small", vocab)
    assert_sampling_keeps_the_distribution(target, decoder, drafter, vocab)


def test_the_format_choice_measures_the_kv_cache_and_remembers_it(tmp_path):
    model = build("llama", VOCAB, hidden=128, window=None)
    kv, measured = format_choice.choose_kv(model, word_tokenizer(VOCAB), "q4_1")
    assert kv in ("", "int8") and set(measured) == {"kl", "bf16_ms", "int8_ms"}
    assert (kv == "int8") == (measured["kl"] <= format_choice.MAX_KL
                              and measured["int8_ms"] <= format_choice.KV_SLOWER * measured["bf16_ms"])
    assert format_choice.choose_kv(model, word_tokenizer(VOCAB), "fp16") == ("", {})  # an fp32 cache's format
    assert format_choice.choose_kv(build("llama", VOCAB), word_tokenizer(VOCAB), "q4_1") == ("", {})  # heads of 16
    path = format_choice.store_path(tmp_path, "tiny")
    format_choice.remember(path, "key", format_choice.FormatChoice("q4_1", "x", {}, "int8"))
    assert format_choice.remembered(path, "key").kv == "int8"
    assert isinstance(KVCache(1).layers[0], PreallocatedLayer)
