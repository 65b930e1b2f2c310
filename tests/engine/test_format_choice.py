"""The weight format measured at first load and remembered per machine (format_choice.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from specchat.engine import format_choice, lean_decoder
from specchat.engine.drafters import NgramDrafter

from .families import build
from .helpers import word_tokenizer

VOCAB = 64


def tiny_target(family: str = "llama", window=None):
    model = build(family, VOCAB, window=window)
    return SimpleNamespace(model=model, tokenizer=word_tokenizer(VOCAB), name="tiny/llama", precision="float32")


def test_first_load_measures_and_attaches_the_fastest_faithful_format(tmp_path):
    target = tiny_target()
    choice = format_choice.settle(target, NgramDrafter(), tmp_path)
    assert choice.format in format_choice.CANDIDATES and target.precision == choice.format
    assert lean_decoder.attached(target.model) is not None
    kept = {name for name, figures in choice.measured.items() if "tok_s" in figures}
    assert choice.format in kept and all(choice.measured[name]["kl"] <= format_choice.MAX_KL for name in kept)
    assert choice.measured[choice.format]["tok_s"] == max(choice.measured[name]["tok_s"] for name in kept)


def test_a_later_load_on_the_same_machine_reuses_the_choice(tmp_path, monkeypatch):
    first = format_choice.settle(tiny_target(), NgramDrafter(), tmp_path)
    monkeypatch.setattr(format_choice, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = format_choice.settle(tiny_target(), NgramDrafter(), tmp_path)
    assert again.format == first.format and "before" in again.reason


def test_another_machine_or_a_corrupt_store_measures_again(tmp_path):
    path = format_choice.store_path(tmp_path, "tiny/llama")
    format_choice.remember(path, format_choice.machine_key("ngram"), format_choice.FormatChoice("int4", "x"))
    assert format_choice.remembered(path, format_choice.machine_key("ngram")).format == "int4"
    assert format_choice.remembered(path, format_choice.machine_key("smoldraft")) is None
    path.write_text("{not json")
    assert format_choice.remembered(path, format_choice.machine_key("ngram")) is None


def test_no_faithful_format_keeps_transformers_forward(tmp_path, monkeypatch):
    monkeypatch.setattr(format_choice, "MAX_KL", -1.0)
    target = tiny_target()
    choice = format_choice.settle(target, NgramDrafter(), tmp_path)
    assert choice.format == "" and "next-token distribution" in choice.reason
    assert lean_decoder.attached(target.model) is None


def test_a_format_asked_for_is_used_without_measuring(tmp_path, monkeypatch):
    monkeypatch.setattr(format_choice, "measure", lambda *a, **k: pytest.fail("measured"))
    target = tiny_target()
    assert format_choice.settle(target, NgramDrafter(), tmp_path, forced="fp16").format == "fp16"
    assert target.precision == "fp16"


def test_a_model_the_lean_decoder_does_not_cover_says_why(tmp_path):
    target = tiny_target("mistral", window=8)
    choice = format_choice.settle(target, NgramDrafter(), tmp_path)
    assert choice.format == "" and "sliding-window" in choice.reason
    assert lean_decoder.attached(target.model) is None and target.precision == "fp16-packed"


def test_the_kv_cache_of_a_format_asked_for_is_measured_once(tmp_path, monkeypatch):
    first = format_choice.settle(tiny_target(), NgramDrafter(), tmp_path, forced="fp16")
    monkeypatch.setattr(format_choice, "choose_kv", lambda *a, **k: pytest.fail("measured again"))
    again = format_choice.settle(tiny_target(), NgramDrafter(), tmp_path, forced="fp16")
    assert again.format == "fp16" and again.reason == "asked for (--quant)" and again.kv == first.kv
