"""Whether a drafter's tokens mean what the target's mean, from vocabularies alone.

Speculation hands the drafter's token ids to the target as they are, so every id
both tokenizers have must be the same string in both. Beyond that, pairs that work
in practice differ: one tokenizer may have extra tokens after the other's last id
(a newer release's added tokens), and a model's output layer may be padded past its
tokenizer (Qwen2.5-7B's 152064 rows against 0.5B's 151936); the engine fits the
drafter's logits to the target's output size, so neither matters here.

`read_vocabulary` reads a directory's tokenizer files (no model, no transformers),
for the drafter picker; loaded tokenizers give theirs with `get_vocab()`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class VocabDifference:
    token_id: int
    drafter_token: str | None  # None: the drafter has no token with this id
    target_token: str | None

    def describe(self) -> str:
        return (f"id {self.token_id} is {_shown(self.drafter_token)} in the drafter and "
                f"{_shown(self.target_token)} in the target")


def _shown(token: str | None, limit: int = 40) -> str:
    if token is None:
        return "no token"
    return repr(token if len(token) <= limit else token[:limit] + "…")


def first_difference(target: Mapping[str, int], drafter: Mapping[str, int]) -> VocabDifference | None:
    """The first id below both vocabularies' ends whose token differs; None when the
    drafter can draft for the target."""
    by_id_t = {i: s for s, i in target.items()}
    by_id_d = {i: s for s, i in drafter.items()}
    if not by_id_t or not by_id_d:
        return VocabDifference(0, by_id_d.get(0), by_id_t.get(0))
    shared_end = min(max(by_id_t), max(by_id_d)) + 1  # extra tokens past either end are fine
    for i in range(shared_end):
        if by_id_t.get(i) != by_id_d.get(i):
            return VocabDifference(i, by_id_d.get(i), by_id_t.get(i))
    return None


@functools.lru_cache(maxsize=64)
def read_vocabulary(directory: Path) -> dict[str, int] | None:
    """Token → id as the directory's tokenizer files give it (what a loaded tokenizer's
    get_vocab() returns), or None when there are no files this can read."""
    try:
        if (directory / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(str(directory / "tokenizer.json")).get_vocab(with_added_tokens=True)
        elif (directory / "vocab.json").is_file():  # a "slow" BPE tokenizer (GPT-2 style)
            vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
            added = directory / "added_tokens.json"
            if added.is_file():
                vocab.update(json.loads(added.read_text(encoding="utf-8")))
        else:
            return None  # e.g. only a sentencepiece model: unknown here, so no match
        vocab.update(_added_tokens(directory))
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
        return None  # unreadable: not a match, never a failure
    return vocab if isinstance(vocab, dict) else None


def _added_tokens(directory: Path) -> dict[str, int]:
    """tokenizer_config.json's added tokens, which transformers adds at load."""
    path = directory / "tokenizer_config.json"
    if not path.is_file():
        return {}
    decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    return {t["content"]: int(i) for i, t in decoder.items() if isinstance(t, dict) and "content" in t}
