"""The CPU decoder (cpu/decoder.py): transformers' logits for every family it
covers, a verify pass bit for bit the single steps it replaces, and speculation on
it lossless with every drafter kind, greedy and sampled."""

from __future__ import annotations

import pytest
import torch

from specchat.engine.cpu import decoder as cpu_decoder
from specchat.engine.cpu import exact_attention, format_choice, kernel_build
from specchat.engine.cpu.quant import weight_formats
from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import Alternative
from specchat.engine.loop.alternatives import forward_with_alternatives
from specchat.engine.model.forward import StateTap, forward_logits, new_cache

from .families import CPU_FAMILIES, build
from .helpers import assert_greedy_lossless_with_every_drafter, assert_sampling_keeps_the_distribution

VOCAB = 64
PROMPT = [(7 * i + 3) % VOCAB for i in range(20)] * 2
FORMATS = [name for name in ("fp16", "int4", "int4-q8head", "q4_1", "int8") if weight_formats.available(name)]
# Attention for steps and verify passes: specchat's kernel where it builds, else sdpa
# over padded rows (plan_rows) for the exact formats; both must be exact.
ROW_KERNEL = [True, False] if kernel_build.available() else [False]


def lean(model, name: str):
    return format_choice.build(model, name)


@pytest.mark.parametrize("family", CPU_FAMILIES)
def test_fp32_lean_decoder_gives_transformers_logits(family):
    model = build(family, VOCAB, window=None)
    decoder = cpu_decoder.CpuDecoder(model, weight_formats.maker("fp32"))
    cache, reference_cache = new_cache(model), new_cache(model)
    for piece in (PROMPT, [5], [6, 7, 8]):  # a prefill, a step, a pass of three after them
        ours = decoder.logits(piece, cache, keep=len(piece))
        theirs = forward_logits(model, reference_cache, piece, keep=len(piece))
        assert torch.allclose(ours, theirs, atol=1e-4), family


def test_families_it_does_not_cover_keep_transformers_forward():
    assert "sliding-window" in cpu_decoder.unsupported(build("mistral", VOCAB))
    assert "gemma2" in cpu_decoder.unsupported(build("gemma2", VOCAB))


@pytest.mark.parametrize("kernel", ROW_KERNEL)
@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("held", [len(PROMPT), exact_attention.PAD - 2])  # the second pass straddles a padded length
def test_a_verify_pass_is_bit_for_bit_the_single_steps(name, held, kernel):
    model = build("llama", VOCAB, window=None)
    decoder = lean(model, name)
    decoder.row_kernel = kernel
    cache = new_cache(model)
    prompt = (PROMPT * 2)[:held]
    decoder.logits(prompt, cache, keep=1)
    run = [9, 4, 33, 2, 60]
    if decoder.exact and not kernel:
        rows = [held + 1 + i for i in range(len(run))]
        calls = exact_attention.plan_rows(rows, torch.bfloat16)
        assert len(calls) == len({exact_attention.padded_length(count) for count in rows})  # one call per padded length
    together = decoder.logits(run, cache, keep=len(run))
    cache.truncate(held)
    alone = torch.cat([decoder.logits([token], cache, keep=1) for token in run])
    # the bf16 formats keep keys and values in bf16 (the attention's inputs are bf16-rounded anyway)
    assert cache.layers[0].keys.dtype == (torch.bfloat16 if decoder.exact else torch.float32)
    if decoder.exact or kernel:  # bf16 activations, or each row computed alone: bit for bit
        assert torch.equal(together, alone)
    else:  # fp16 weights, fp32 activations: sdpa's order of sums alone (~1e-7)
        assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("kernel", ROW_KERNEL)
@pytest.mark.parametrize("name", FORMATS)
def test_an_alternative_row_is_bit_for_bit_the_step_after_it(name, kernel):
    model = build("llama", VOCAB, window=None)
    cpu_decoder.attach(model, lean(model, name))
    cpu_decoder.attached(model).row_kernel = kernel
    try:
        cache = new_cache(model)
        forward_logits(model, cache, PROMPT[:-1], keep=1)
        # [last, d1, d2] and an alternative a to d2 (beside it, at the same position)
        rows = forward_with_alternatives(model, cache, PROMPT[-1], [9, 4], [Alternative(1, 50, 0.2)])
        cache.truncate(len(PROMPT) - 1)
        steps = torch.cat([forward_logits(model, cache, [token], keep=1) for token in (PROMPT[-1], 9, 50)])
        exact = cpu_decoder.attached(model).exact or kernel
        same = torch.equal if exact else lambda a, b: torch.allclose(a, b, atol=1e-5)
        assert same(rows[:2], steps[:2]) and same(rows[3], steps[2])
    finally:
        cpu_decoder.attach(model, None)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("family", CPU_FAMILIES)
def test_greedy_speculation_on_it_is_plain_decoding_with_every_drafter(family, name):
    target = build(family, VOCAB, seed=0, window=None)
    cpu_decoder.attach(target, lean(target, name))
    small_model = build(family, VOCAB, seed=5, layers=1, window=None)
    cpu_decoder.attach(small_model, lean(small_model, "fp16" if "fp16" in FORMATS else "fp32"))
    assert_greedy_lossless_with_every_drafter(target, small_model, PROMPT, VOCAB, f"{family}/{name}")


@pytest.mark.parametrize("drafter_kind", ["model", "ngram"])
def test_sampling_on_it_keeps_the_target_distribution(drafter_kind):
    vocab, name = 12, FORMATS[-1]  # the format furthest from fp32 this build has
    target = build("llama", vocab, seed=0, window=None)
    decoder = lean(target, name)
    cpu_decoder.attach(target, decoder)
    drafter = (ModelDrafter(build("llama", vocab, seed=7, layers=1, window=None), "small", vocab)
               if drafter_kind == "model" else NgramDrafter())
    assert_sampling_keeps_the_distribution(target, decoder, drafter, vocab)


def test_the_state_tap_reads_the_lean_decoders_hidden_states():
    model = build("llama", VOCAB, window=None)
    with torch.inference_mode():
        expected = model.get_decoder()(torch.tensor([PROMPT])).last_hidden_state[0]
    cpu_decoder.attach(model, cpu_decoder.CpuDecoder(model, weight_formats.maker("fp32")))
    with StateTap(model) as tap:
        forward_logits(model, new_cache(model), PROMPT, keep=1)
    assert torch.allclose(tap.states(), expected, atol=1e-5)


@pytest.mark.skipif("q4_1" not in FORMATS or not kernel_build.available(), reason="block formats on specchat's kernels")
@pytest.mark.parametrize("kv", ["", "int8"])
def test_block_products_called_directly_give_the_modules_bits(kv):
    """All layers in one operator (fused_layers) and layer by layer through the
    modules on the kernel route: the same bits, a float and an int8 cache."""
    model = build("llama", VOCAB, hidden=128, window=None, head_dim=32)
    decoder = format_choice.build(model, "q4_1", kv, PROMPT)
    assert decoder.body.at_once is not None  # every product a Q4_1 block format's
    # the first pass makes the buffers and the fifth grows them (512 positions): layer by layer
    pieces = (PROMPT, [5], [6, 7, 8], list(range(9, 60)), [i % VOCAB for i in range(480)], [3])

    def passes():
        cache = new_cache(model)
        return [decoder.logits(piece, cache, keep=len(piece)) for piece in pieces]

    at_once = passes()
    decoder.body.at_once = None  # through the modules, as formats without block products go
    layer_by_layer = passes()
    assert all(torch.equal(a, b) for a, b in zip(at_once, layer_by_layer))


@pytest.mark.parametrize("family", CPU_FAMILIES)
def test_the_rotation_table_holds_the_rotary_modules_values(family):
    """The lean body indexes a table instead of calling the rotary module every pass:
    the same bits at any position, a pass's or a single one, past the first table."""
    from specchat.engine.model.rotation_table import RotationTable

    rotary = build(family, VOCAB, window=None).get_decoder().rotary_emb
    table = RotationTable.of(rotary)
    assert table is not None
    x = torch.zeros(3, 8)
    with torch.inference_mode():
        for positions in ([0], [5, 6, 7], [1500], [40, 41, 41, 42]):  # 1500 grows it; 41 twice: alternatives
            cos, sin = rotary(x[None], torch.tensor([positions]))
            got_cos, got_sin = table(x, torch.tensor(positions))
            assert torch.equal(got_cos, cos[0].float()) and torch.equal(got_sin, sin[0].float())


def test_a_rope_that_changes_with_the_length_keeps_the_modules_call():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from specchat.engine.model.rotation_table import RotationTable

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    assert RotationTable.of(LlamaRotaryEmbedding(config)) is None
