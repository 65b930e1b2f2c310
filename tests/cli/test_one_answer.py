"""One answer whatever the drafter: greedy one-shot runs in fresh processes give the
target's own text token for token with no drafter, the default drafter, n-gram lookup
and a model drafter, whatever state the remembered format choice is in.

The target's weight format and KV cache are chosen once per machine and never by the
drafter (engine/cpu/format_choice.py); when the choice was keyed by the drafter, `--drafter
none` ran a bf16 KV cache where the default drafter ran int8, and 5 of 6 answers
differed on a 2-core Zen 4.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from specchat.local_models import cache_root

from .conftest import REPO, specchat

QUESTIONS = [
    "Why is the sky blue?",
    "Translate into German: The train leaves at noon and arrives in Berlin at six.",
    "What is 17 times 23? Show your working.",
    "Write a Python function that reverses a string.",
    "I asked you about tea yesterday. Now tell me three facts about coffee.",
]
# A document of over 2,000 tokens on stdin, the question as the argument: the long
# context's cache is what a bf16/int8 split showed up in.
DOCUMENT = (REPO / "docs" / "engine.md").read_text(encoding="utf-8")[:10_000]
DOCUMENT_QUESTION = "Summarise the document above in two sentences."
DRAFTERS = ("none", "smoldraft", "ngram", "embedded")  # embedded: a model drafter (transformers' forward)
TOKENS = "32"


@pytest.fixture
def fresh_cache(tmp_path) -> Path:
    """A cache root with no remembered format choice, sharing the converted model and the
    built kernels (a fresh conversion would cost 30 s, a kernel build 15 s)."""
    root = tmp_path / "cache"
    root.mkdir()
    for part in ("converted", "kernels"):
        if (cache_root() / part).exists():
            (root / part).symlink_to(cache_root() / part)
    return root


def _answer(cache: Path, drafter: str, question: str, context: str = "") -> dict:
    result = specchat("run", "--json", "--temperature", "0", "--max-new-tokens", TOKENS, "--drafter", drafter,
                      question, input=context.encode(), env={"SPECCHAT_CACHE_DIR": str(cache)})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return json.loads(result.stdout)


def _same_everywhere(cache: Path, drafters, prompts) -> None:
    for question, context in prompts:
        answers = {drafter: _answer(cache, drafter, question, context) for drafter in drafters}
        texts = {drafter: answer["text"] for drafter, answer in answers.items()}
        assert len(set(texts.values())) == 1, f"{question!r}: {texts}"
        # Each run names how the target was held, and all held it the same way.
        held = {(a["weights"], a["kv_cache"]) for a in answers.values()}
        assert len(held) == 1 and all(held.pop()), answers


def _old_store(cache: Path) -> Path:
    path = cache / "formats" / "SmolLM2-135M-Instruct.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_the_document_is_long():
    from transformers import AutoTokenizer

    converted = next((cache_root() / "converted").glob("*SmolLM2*"), None)
    if converted is None:
        pytest.skip("the embedded model is not converted yet")
    assert len(AutoTokenizer.from_pretrained(converted)(DOCUMENT)["input_ids"]) > 2000


@pytest.mark.slow
def test_greedy_answers_are_the_same_with_every_drafter_from_an_empty_format_cache(fresh_cache):
    # The default drafter first, so the choice is measured in a process that has one.
    prompts = [(DOCUMENT_QUESTION, DOCUMENT), *((q, "") for q in QUESTIONS)]
    _same_everywhere(fresh_cache, ("smoldraft", "none", "ngram", "embedded"), prompts)
    assert len(json.loads(_old_store(fresh_cache).read_text())) == 1  # one choice, whatever drafted


@pytest.mark.slow
def test_greedy_answers_agree_after_a_store_written_per_drafter(fresh_cache):
    # What the format choice wrote when it was keyed by the drafter: disagreeing entries.
    from specchat.engine.cpu import format_choice

    machine = " | ".join(format_choice.machine_key().split(" | ")[:4])
    entries = {f"{machine} | drafter none | decoder 9": {"format": "q4_1", "kv": "", "measured": {}},
               f"{machine} | drafter smoldraft | decoder 9": {"format": "int4-q8head", "kv": "", "measured": {}},
               f"{machine} | drafter ngram | decoder 9": {"format": "q4_1", "kv": "int8", "measured": {}}}
    _old_store(fresh_cache).write_text(json.dumps(entries))
    _same_everywhere(fresh_cache, ("none", "smoldraft"), [(DOCUMENT_QUESTION, DOCUMENT), (QUESTIONS[0], "")])


@pytest.mark.slow
def test_greedy_answers_agree_after_a_corrupt_store(fresh_cache):
    _old_store(fresh_cache).write_bytes(os.urandom(64))
    _same_everywhere(fresh_cache, ("ngram", "none"), [(DOCUMENT_QUESTION, DOCUMENT), (QUESTIONS[1], "")])
    assert json.loads(_old_store(fresh_cache).read_text())  # rewritten whole
