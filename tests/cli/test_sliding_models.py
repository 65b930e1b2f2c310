"""A user's own sliding-window model, end to end: `specchat run --target DIR`.

Before the one KV cache, every model with sliding-window attention failed mid-answer
with a RuntimeError once the conversation passed the window. A tiny random Mistral
(window 8) saved as a directory, a prompt well past the window: speculation with a
draft model and with ngram answers exactly what plain decoding answers. A model the
engine cannot serve is refused at load, in one line that names it.
"""

from __future__ import annotations

import json

import pytest

from ..engine.families import build
from .conftest import specchat
from .fake_hub import word_tokenizer, words

PROMPT = " ".join(f"w{(7 * i) % 40}" for i in range(40))  # ~40 tokens: five windows


@pytest.fixture(scope="module")
def mistral_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistral")
    tokenizer = word_tokenizer(words(64, stem="w"))
    out = {}
    for name, seed, layers in (("target", 0, 2), ("draft", 3, 1)):
        model = build("mistral", vocab_size=64, seed=seed, layers=layers)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        out[name] = root / name
    return out


def _answer(target, drafter) -> dict:
    result = specchat("run", "--target", str(target), "--drafter", drafter, "--max-new-tokens", "24",
                      "--json", PROMPT)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.mark.slow
def test_sliding_window_target_past_its_window_is_lossless(mistral_dirs):
    plain = _answer(mistral_dirs["target"], "none")
    assert plain["stats"]["tokens"] > 0
    for drafter in (str(mistral_dirs["draft"]), "ngram"):
        spec = _answer(mistral_dirs["target"], drafter)
        assert spec["text"] == plain["text"], f"{drafter} changed the answer"
    assert spec["stats"]["rounds"] <= plain["stats"]["rounds"]


@pytest.mark.slow
def test_an_architecture_the_engine_cannot_serve_fails_at_load(tmp_path):
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    config = Qwen3NextConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, linear_num_value_heads=2,
                             linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
                             num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32,
                             shared_expert_intermediate_size=32, layer_types=["linear_attention", "full_attention"])
    Qwen3NextForCausalLM(config).save_pretrained(tmp_path)
    word_tokenizer(words(64)).save_pretrained(tmp_path)
    result = specchat("run", "--target", str(tmp_path), "--drafter", "none", "hi")
    err = result.stderr.decode()
    assert result.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith("specchat: error: ") and "Qwen3NextForCausalLM has linear_attention layers" in err
