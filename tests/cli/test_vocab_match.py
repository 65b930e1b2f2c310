"""Which drafter tokenizers a target accepts: same string for every shared id."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from specchat.models import ModelError, convert_gguf, embedded_gguf_path, load_drafter, load_target
from specchat.vocab_match import VocabDifference, first_difference, read_vocabulary

from .fake_hub import save_model, word_tokenizer, words

WORDS = words(40)


def test_extra_tokens_past_either_end_are_fine_a_changed_or_missing_id_is_not():
    base = {"a": 0, "b": 1, "c": 2}
    assert first_difference(base, {**base, "d": 3}) is None
    assert first_difference({**base, "d": 3, "e": 4}, base) is None
    assert first_difference(base, {"a": 0, "x": 1, "c": 2}) == VocabDifference(1, "x", "b")
    assert first_difference(base, {"a": 0, "c": 2, "d": 3}) == VocabDifference(1, None, "b")
    assert VocabDifference(1, None, "b").describe() == "id 1 is no token in the drafter and 'b' in the target"


def test_tokenizer_files_read_as_the_loaded_tokenizer_sees_them(tmp_path, embedded):
    tokenizer = word_tokenizer(WORDS, extra=["<tool>"])
    tokenizer.save_pretrained(tmp_path)
    assert read_vocabulary(tmp_path) == AutoTokenizer.from_pretrained(tmp_path).get_vocab() == tokenizer.get_vocab()
    assert read_vocabulary(convert_gguf(embedded_gguf_path())) == embedded.tokenizer.get_vocab()
    assert read_vocabulary(tmp_path / "nothing-here") is None


def test_a_padded_pair_loads_as_a_drafter(tmp_path):
    # The target's head has 64 rows for 42 tokens; the drafter's tokenizer lacks the 2 added ones.
    target_dir = save_model(tmp_path / "target", word_tokenizer(WORDS, extra=["<tool>", "</tool>"]),
                            hidden=64, vocab_size=64)
    drafter_dir = save_model(tmp_path / "drafter", word_tokenizer(WORDS), hidden=32)
    target = load_target(str(target_dir), device="cpu", quant="none", dtype=torch.float32)
    assert load_drafter(str(drafter_dir), target, dtype=torch.float32).kind == "model"


def test_another_tokenizer_is_refused_naming_the_first_differing_token(tmp_path):
    target_dir = save_model(tmp_path / "target", word_tokenizer(WORDS), hidden=64)
    drafter_dir = save_model(tmp_path / "drafter", word_tokenizer(WORDS[:17] + ["foo"] + WORDS[18:]))
    target = load_target(str(target_dir), device="cpu", quant="none", dtype=torch.float32)
    with pytest.raises(ModelError) as info:
        load_drafter(str(drafter_dir), target, dtype=torch.float32)
    assert str(info.value) == (f"drafter {str(drafter_dir)!r} has a different tokenizer from target "
                               f"{str(target_dir)!r}: id 17 is 'foo' in the drafter and 't17' in the target")
