"""The CPU fast path: linear layers as fbgemm fp16 GEMMs (engine/cpu/quant/fp16_linear.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from specchat.engine.cpu import decoder as cpu_decoder
from specchat.engine.cpu.quant import fp16_linear
from specchat.engine.cpu.quant.fp16_linear import Fp16PackedLinear, LazyFp16PackedLinear, pack_fp16
from specchat.engine.drafters.hf_model import ModelDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.drafters.trained import TrainedDrafter
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.models import ModelError, _quantization, load_drafter, load_target, settle_format

pytestmark = pytest.mark.skipif(not fp16_linear.available(), reason="needs fbgemm's fp16 GEMM (x86 with AVX2)")


def test_packed_linear_computes_with_fp16_weights_in_fp32():
    torch.manual_seed(0)
    linear = nn.Linear(96, 200)
    packed = Fp16PackedLinear.from_linear(linear)
    x = torch.randn(3, 5, 96)
    rounded = nn.functional.linear(x, linear.weight.half().float(), linear.bias)
    torch.testing.assert_close(packed(x), rounded, rtol=1e-5, atol=1e-5)
    assert packed(x).dtype == torch.float32 and (packed.in_features, packed.out_features) == (96, 200)


def test_a_row_gets_the_same_result_alone_or_among_others():
    """What a verify pass relies on: the logits of a position do not depend on how many
    tokens were fed with it (bf16 on a CPU and dynamic int8 both fail this)."""
    torch.manual_seed(0)
    packed = Fp16PackedLinear.from_linear(nn.Linear(576, 1536, bias=False))
    row = torch.randn(1, 576)
    for m in (2, 5, 8):
        batch = torch.cat([row, 10 * torch.randn(m - 1, 576)])
        torch.testing.assert_close(packed(batch)[:1], packed(row), rtol=1e-5, atol=1e-5)


def test_pack_replaces_every_linear_in_place():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
    assert pack_fp16(model) is model
    assert [type(m).__name__ for m in model.modules() if "Linear" in type(m).__name__] == ["Fp16PackedLinear"] * 2


def test_fp16_is_refused_off_the_cpu():
    with pytest.raises(ModelError, match="CPU path"):
        _quantization("fp16", torch.device("cuda"))


@pytest.fixture(scope="module")
def packed_target(embedded):  # `embedded` first: the converted model is cached by then
    return load_target("embedded", device="cpu")  # the CPU default


def _answers(target, drafter, prompts, **settings):
    session = ChatSession(target, drafter, settings=GenerationSettings(**settings))
    return [list(session.send(p))[-1] for p in prompts]


def test_cpu_default_packs_target_and_shipped_drafter_and_stays_lossless(packed_target):
    target = packed_target
    assert target.precision == "fp16-packed"
    assert isinstance(target.model.get_output_embeddings(), Fp16PackedLinear)
    drafter = load_drafter("smoldraft", target)
    assert isinstance(drafter, TrainedDrafter) and isinstance(drafter.model.head, Fp16PackedLinear)
    prompts = ["Name three primary colours.", "Repeat after me: the cat sat on the mat."]
    plain = _answers(target, NoDrafter(), prompts, max_new_tokens=24)
    for spec_drafter, k in [(drafter, 4), (ModelDrafter(target.model, name="self", vocab_size=49152), 5)]:
        spec = _answers(target, spec_drafter, prompts, max_new_tokens=24, k=k)
        assert [a.text for a in spec] == [a.text for a in plain] and plain[0].text
        assert sum(a.totals.accepted for a in spec) > 0


def test_a_lazy_layer_packs_on_its_first_call_to_the_same_bits():
    torch.manual_seed(3)
    linear = nn.Linear(64, 48)
    eager, lazy = Fp16PackedLinear.from_linear(linear), LazyFp16PackedLinear.from_linear(linear)
    assert lazy._packed is None  # nothing packed at load
    x = torch.randn(5, 64)
    assert torch.equal(lazy(x), eager(x)) and lazy._packed is not None


def test_a_target_with_a_lean_decoder_leaves_its_fallback_unpacked_until_called(embedded):
    target = load_target("embedded", device="cpu", lean=True)
    settle_format(target, NoDrafter())
    head = target.model.get_output_embeddings()
    assert cpu_decoder.attached(target.model) is not None
    assert isinstance(head, LazyFp16PackedLinear) and head._packed is None
    session = ChatSession(target, NoDrafter(), settings=GenerationSettings(max_new_tokens=4))
    list(session.send("Hello"))
    assert head._packed is None  # the CPU decoder ran every pass
