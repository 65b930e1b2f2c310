"""The weight format and KV cache chosen at first load and remembered per machine,
whatever the drafter (cpu/format_choice.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from specchat.engine.cpu import decoder as cpu_decoder, format_choice

from .families import build
from .helpers import word_tokenizer

VOCAB = 64


def tiny_target(family: str = "llama", window=None):
    model = build(family, VOCAB, window=window)
    return SimpleNamespace(model=model, tokenizer=word_tokenizer(VOCAB), name="tiny/llama", precision="float32")


def test_first_load_measures_and_attaches_a_fast_faithful_format(tmp_path):
    target = tiny_target()
    choice = format_choice.settle(target, tmp_path)
    assert choice.format in format_choice.CANDIDATES and target.precision == choice.format
    assert cpu_decoder.attached(target.model) is not None
    kept = {name for name, figures in choice.measured.items() if "cost_ms" in figures}
    assert choice.format in kept and all(choice.measured[name]["kl"] <= format_choice.MAX_KL for name in kept)
    fastest = min(choice.measured[name]["cost_ms"] for name in kept)
    assert choice.measured[choice.format]["cost_ms"] <= (1 + format_choice.FORMAT_MARGIN) * fastest


def test_the_most_faithful_of_the_near_fastest_formats_wins():
    measured = {"int4": {"kl": 3e-4, "cost_ms": 10.0}, "q4_1": {"kl": 2e-5, "cost_ms": 11.0},
                "fp16": {"kl": 2e-6, "cost_ms": 30.0}, "int8": {"kl": 3e-3}}
    assert format_choice.preferred(measured) == "q4_1"  # within the margin of int4, more faithful
    measured["int4"]["cost_ms"] = 11.0 / (1 + format_choice.FORMAT_MARGIN) - 0.1
    assert format_choice.preferred(measured) == "int4"  # faster by a clear margin
    # The machine's earlier choice stays unless beaten by the margin, even by a more faithful one.
    measured["int4"]["cost_ms"] = 10.5
    assert format_choice.preferred(measured, earlier="int4") == "int4"
    assert format_choice.preferred(measured, earlier="fp16") == "q4_1"  # fp16 is not near the fastest


def test_an_earlier_choice_is_read_from_other_keys_of_this_machine_only(tmp_path):
    path = format_choice.store_path(tmp_path, "tiny/llama")
    key = format_choice.machine_key()
    assert "drafter" not in key  # the target's numbers never depend on what drafts
    machine = " | ".join(key.split(" | ")[:4])
    for other, fmt in ((f"{machine} | drafter none | decoder 9", "int4"),
                       (f"{machine} | drafter smoldraft | decoder 9", "int4"),
                       (f"{machine} | drafter ngram | decoder 9", "q4_1"),
                       (f"{machine} | decoder 9 | asked fp16", "fp16"),
                       (f"Another CPU | AVX2 | {key.split(' | ', 2)[2]}", "fp16")):
        format_choice.remember(path, other, format_choice.FormatChoice(fmt, "x"))
    assert format_choice.remembered(path, key) is None  # old drafter-keyed entries are not this key
    assert format_choice.earlier_choice(path, key) == "int4"
    assert format_choice.earlier_choice(format_choice.store_path(tmp_path, "other"), key) is None


def test_a_later_load_on_the_same_machine_reuses_the_choice(tmp_path, monkeypatch):
    first = format_choice.settle(tiny_target(), tmp_path)
    monkeypatch.setattr(format_choice, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = format_choice.settle(tiny_target(), tmp_path)
    assert again.format == first.format and "before" in again.reason


def test_another_machine_or_a_corrupt_store_measures_again(tmp_path):
    path = format_choice.store_path(tmp_path, "tiny/llama")
    key = format_choice.machine_key()
    format_choice.remember(path, key, format_choice.FormatChoice("int4", "x"))
    assert format_choice.remembered(path, key).format == "int4"
    assert format_choice.remembered(path, key.replace("threads", "threads x")) is None
    path.write_text("{not json")
    assert format_choice.remembered(path, key) is None
    format_choice.remember(path, key, format_choice.FormatChoice("q4_1", "x", kv="int8"))  # rewritten whole
    assert format_choice.remembered(path, key).kv == "int8"


def test_no_faithful_format_keeps_transformers_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(format_choice, "MAX_KL", -1.0)
    target = tiny_target()
    choice = format_choice.settle(target, tmp_path)
    assert choice.format == "" and "next-token distribution" in choice.reason
    assert cpu_decoder.attached(target.model) is None


def test_a_format_asked_for_is_used_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(format_choice, "measure", lambda *a, **k: pytest.fail("measured"))
    target = tiny_target()
    assert format_choice.settle(target, tmp_path, forced="fp16").format == "fp16"
    assert target.precision == "fp16"


def test_a_model_the_lean_decoder_does_not_cover_says_why(tmp_path):
    target = tiny_target("mistral", window=8)
    choice = format_choice.settle(target, tmp_path)
    assert choice.format == "" and "sliding-window" in choice.reason
    assert cpu_decoder.attached(target.model) is None and target.precision == "fp16-packed"


def test_the_kv_cache_of_a_format_asked_for_is_measured_once(tmp_path, monkeypatch):
    first = format_choice.settle(tiny_target(), tmp_path, forced="fp16")
    monkeypatch.setattr(format_choice, "choose_kv", lambda *a, **k: pytest.fail("measured again"))
    again = format_choice.settle(tiny_target(), tmp_path, forced="fp16")
    assert again.format == "fp16" and again.reason == "asked for (--quant)" and again.kv == first.kv
