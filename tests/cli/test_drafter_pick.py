"""A drafter picked for a named target, from a Hugging Face cache of tiny real models."""

from __future__ import annotations

import json
import re

import pytest

from specchat.config import resolve
from specchat.drafter_pick import Pick, pick_drafter

from .conftest import specchat
from .fake_hub import cache_model, cache_stand_in, spoil_weights, word_tokenizer, words

WORDS = words(40)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache that this process (and its children) look in."""
    import huggingface_hub.constants as constants

    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(path))
    return path


def test_picks_the_smallest_same_family_model_with_the_target_tokenizer(hub):
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    cache_model(hub, "acme/mid", word_tokenizer(WORDS), hidden=48)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    cache_model(hub, "acme/bigger", word_tokenizer(WORDS), hidden=64, layers=3)
    pick = pick_drafter("acme/big")
    assert pick.drafter == "acme/small"
    assert re.fullmatch(r"drafter: picked acme/small for target acme/big \(same tokenizer, \d+\.\d× smaller\)",
                        pick.note), pick.note


def test_skips_another_tokenizer_and_another_family(hub):
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    other_words = WORDS[:3] + words(37, "w")  # differs from id 3 on
    cache_model(hub, "acme/tiny-other-words", word_tokenizer(other_words), hidden=16)
    cache_model(hub, "acme/tiny-qwen", word_tokenizer(WORDS), hidden=16, family="qwen2")
    assert pick_drafter("acme/big").drafter == "acme/small"


def test_never_picks_a_model_as_large_as_the_target_and_says_why_it_falls_back(hub):
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    cache_model(hub, "acme/same-size", word_tokenizer(WORDS), hidden=32, seed=1)
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    assert pick_drafter("acme/small") == Pick(
        "ngram", "drafter: ngram for target acme/small: no smaller llama model with its tokenizer is in "
                 "the local cache")


def test_a_target_not_in_the_cache_gets_ngram_and_a_note(hub):
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    pick = pick_drafter("acme/absent")
    assert pick.drafter == "ngram"
    assert pick.note.startswith("drafter: ngram for target acme/absent: it is not in the local Hugging Face cache")


def test_a_padded_head_and_extra_added_tokens_still_qualify(hub):
    # Qwen2.5's pattern: the larger model's output layer is padded past its tokenizer,
    # and here its tokenizer also has tokens added after the shared ones.
    cache_model(hub, "acme/big", word_tokenizer(WORDS, extra=["<tool>", "</tool>"]), hidden=64, layers=2,
                vocab_size=64)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    assert pick_drafter("acme/big").drafter == "acme/small"


def test_resolve_picks_only_when_no_drafter_is_named(hub, monkeypatch):
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    picked = resolve({"target": "acme/big"})
    assert picked.drafter == "acme/small" and picked.drafter_note.startswith("drafter: picked acme/small")
    named = resolve({"target": "acme/big", "drafter": "ngram"})
    assert named.drafter == "ngram" and named.drafter_note is None
    monkeypatch.setenv("SPECCHAT_DRAFTER", "none")
    assert resolve({"target": "acme/big"}).drafter == "none"
    monkeypatch.delenv("SPECCHAT_DRAFTER")
    embedded = resolve({})
    assert embedded.drafter == "smoldraft" and embedded.drafter_note is None


@pytest.fixture(scope="module")
def embedded_dir():
    from specchat.models import convert_gguf, embedded_gguf_path

    return convert_gguf(embedded_gguf_path())  # a no-op once converted


def test_the_embedded_model_drafts_for_a_larger_smollm2(hub, embedded_dir):
    config = json.loads((embedded_dir / "config.json").read_text())
    config.update(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5)
    cache_stand_in(hub, "HuggingFaceTB/SmolLM2-360M-Instruct", config, embedded_dir, parameters=361_821_120)
    assert pick_drafter("HuggingFaceTB/SmolLM2-360M-Instruct") == Pick(
        "embedded", "drafter: picked embedded (SmolLM2-135M-Instruct) for target "
                    "HuggingFaceTB/SmolLM2-360M-Instruct (same tokenizer, 2.7× smaller)")


def test_models_lists_the_drafter_picked_for_each_cached_model(hub, cli):
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    cache_model(hub, "acme/other-words", word_tokenizer(words(40, "w")), hidden=16)
    result = cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {m["spec"]: m["drafter"] for m in json.loads(result.stdout)["models"] if m["source"] == "hf-cache"}
    assert listed == {"acme/big": "acme/small", "acme/small": "ngram", "acme/other-words": "ngram"}

    table = cli("models", env={"COLUMNS": "240"})
    assert table.exit_code == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if "acme/big" in line)
    assert "acme/small" in row


@pytest.mark.slow
def test_run_with_a_cached_target_picks_its_drafter_and_says_so(hub):
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32)
    proc = specchat("run", "--target", "acme/big", "--max-new-tokens", "4", "--json", "hi",
                    env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert re.fullmatch(r"specchat: drafter: picked acme/small for target acme/big \(same tokenizer, "
                        r"\d+\.\d× smaller\)\n", stderr), stderr
    result = json.loads(proc.stdout)
    assert result["drafter"] == "small" and 0 < result["stats"]["tokens"] <= 4


def test_a_picked_drafter_that_fails_to_load_gives_way_to_ngram(hub, cli, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cache_model(hub, "acme/big", word_tokenizer(WORDS), hidden=64, layers=2)
    spoil_weights(cache_model(hub, "acme/small", word_tokenizer(WORDS), hidden=32))
    result = cli("run", "--target", "acme/big", "--max-new-tokens", "2", "--device", "cpu", "--json", "hi")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("specchat: drafter: ngram for target acme/big: the picked acme/small did "
                                    "not load (")
    assert result.stderr.count("\n") == 1 and json.loads(result.stdout)["drafter"] == "ngram"
