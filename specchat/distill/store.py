"""A compact, resumable store of the target's answers: `specchat distill --data DIR`.

DIR holds numbered shards and a manifest:

    shard-000000.npz ...   one generated batch each
    manifest.json          the settings that made them, one line per shard, totals

A shard holds token ids only, concatenated, with their lengths: the prompt (chat
template included, as ChatSession feeds it), the answer, and the target's argmax at
every answer position (`labels`; the answer itself where it decoded greedily, what
greedy decoding would say where it sampled), as uint16 when the vocabulary fits
(49,152 ids for SmolLM2: 2 bytes a token) and int32 otherwise. Beside the ids, `meta`
is the shard's JSON (each record's kind and messages, its seed, how long it took).

No soft targets: the top-16 log-probabilities datagen.py keeps cost 96 bytes a token
beside the id's 2 (220 MB against 5 for 2.3M answer tokens), and a teacher-forced
pass over stored ids gives them back, or the target's hidden states an EAGLE-style
drafter reads, for any shard a trainer picks, at prefill speed (all positions in one
pass) rather than the decode speed that made them.

Writes are atomic: a shard is written to a temporary file, synced and renamed, then
the manifest likewise. A run killed at any point (SIGKILL included) loses at most
the shard it was writing: on open, a shard on disk that the manifest lacks (killed
between the two renames) is read back into it, and leftover temporaries are removed.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "manifest.json"


class StoreError(ValueError):
    """A data directory that cannot be used as asked; the message says why."""


@dataclass
class Record:
    kind: str
    messages: list[dict]  # the chat up to the user's last turn
    prompt: list[int]  # template ids the target was fed
    answer: list[int]  # what it answered (eos included when it ended on one)
    labels: list[int]  # its argmax at every answer position


@dataclass
class Shard:
    index: int
    records: list[Record]
    meta: dict = field(default_factory=dict)  # seed, sampled, seconds, answer_seconds, question_tokens, ...

    def summary(self) -> dict:
        kinds: dict[str, int] = {}
        for r in self.records:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        return {"file": shard_name(self.index), "index": self.index, "answers": len(self.records),
                "answer_tokens": sum(len(r.answer) for r in self.records),
                "prompt_tokens": sum(len(r.prompt) for r in self.records), "kinds": kinds,
                **{k: v for k, v in self.meta.items() if k in ("seed", "sampled", "seconds", "answer_seconds", "question_tokens")}}


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.npz"


def _concat(lists: list[list[int]], dtype) -> tuple[np.ndarray, np.ndarray]:
    flat = np.fromiter((t for ids in lists for t in ids), dtype=dtype, count=sum(map(len, lists)))
    return flat, np.array([len(ids) for ids in lists], dtype=np.int32)


def _split(flat: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    ends = np.cumsum(lengths)
    return [flat[end - n:end].tolist() for n, end in zip(lengths.tolist(), ends.tolist())]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # whole or absent, never half


def encode_shard(shard: Shard, vocab_size: int) -> bytes:
    dtype = np.uint16 if vocab_size <= 65536 else np.int32
    recs = shard.records
    prompt, prompt_len = _concat([r.prompt for r in recs], dtype)
    answer, answer_len = _concat([r.answer for r in recs], dtype)
    labels, _ = _concat([r.labels for r in recs], dtype)
    meta = {**shard.meta, "index": shard.index, "records": [{"kind": r.kind, "messages": r.messages} for r in recs]}
    buffer = io.BytesIO()
    np.savez(buffer, prompt=prompt, prompt_len=prompt_len, answer=answer, answer_len=answer_len, labels=labels,
             meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return buffer.getvalue()


def read_shard(path: Path) -> Shard:
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes())
        prompts, answers = _split(z["prompt"], z["prompt_len"]), _split(z["answer"], z["answer_len"])
        labels = _split(z["labels"], z["answer_len"])
    records = [Record(m["kind"], m["messages"], p, a, lab)
               for m, p, a, lab in zip(meta.pop("records"), prompts, answers, labels)]
    return Shard(meta.pop("index"), records, meta)


def _differences(theirs, mine: dict) -> str:
    """`key: theirs (now mine)` for every setting that differs."""
    theirs = theirs if isinstance(theirs, dict) else {}
    keys = sorted(set(theirs) | set(mine), key=lambda k: (k not in mine, k))
    return ", ".join(f"{k}: {json.dumps(theirs.get(k))} (now {json.dumps(mine.get(k))})"
                     for k in keys if theirs.get(k) != mine.get(k))


def _totals(shards: list[dict]) -> dict:
    kinds: dict[str, int] = {}
    for s in shards:
        for k, n in s["kinds"].items():
            kinds[k] = kinds.get(k, 0) + n
    total = lambda key: sum(s.get(key, 0) for s in shards)  # noqa: E731
    seconds = total("seconds")
    return {"shards": len(shards), "answers": total("answers"), "answer_tokens": total("answer_tokens"),
            "prompt_tokens": total("prompt_tokens"), "question_tokens": total("question_tokens"),
            "seconds": round(seconds, 1), "answer_seconds": round(total("answer_seconds"), 1),
            "answer_tokens_per_s": round(total("answer_tokens") / seconds, 1) if seconds else None,
            "kinds": dict(sorted(kinds.items()))}


class Store:
    """A data directory opened for reading and appending. `settings` are what shape
    the shards (the target, batch size, seeds...): a directory made with others is
    refused, so a resumed run continues the same data."""

    def __init__(self, root: Path, settings: dict, vocab_size: int) -> None:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is not a directory")
        settings = json.loads(json.dumps(settings))  # as the manifest will read back
        self.root, self.vocab_size = root, vocab_size
        root.mkdir(parents=True, exist_ok=True)
        path = root / MANIFEST
        manifest = json.loads(path.read_text()) if path.exists() else None
        if manifest is not None and manifest.get("settings") != settings:
            differ = _differences(manifest.get("settings"), settings)
            raise StoreError(f"{root} holds data made with other settings ({differ}); "
                             f"run with those, or use another directory")
        for leftover in root.glob("*.tmp"):
            leftover.unlink()  # a write a killed run did not finish
        listed = {s["index"]: s for s in (manifest or {}).get("shards", []) if (root / s["file"]).exists()}
        for file in sorted(root.glob("shard-*.npz")):
            index = int(file.stem.split("-")[1])
            if index not in listed:  # renamed in place, killed before the manifest was
                listed[index] = read_shard(file).summary()
        if sorted(listed) != list(range(len(listed))):
            raise StoreError(f"{root} is missing shards {sorted(set(range(max(listed) + 1)) - set(listed))}")
        self.settings, self.shards = settings, [listed[i] for i in sorted(listed)]
        self._write_manifest()

    @property
    def totals(self) -> dict:
        return _totals(self.shards)

    @property
    def next_index(self) -> int:
        return len(self.shards)

    def paths(self) -> list[Path]:
        return [self.root / s["file"] for s in self.shards]

    def append(self, shard: Shard) -> dict:
        if shard.index != self.next_index:
            raise StoreError(f"shard {shard.index} written out of order (next is {self.next_index})")
        _write_atomic(self.root / shard_name(shard.index), encode_shard(shard, self.vocab_size))
        self.shards.append(shard.summary())
        self._write_manifest()
        return self.shards[-1]

    def _write_manifest(self) -> None:
        manifest = {"format": FORMAT, "settings": self.settings, "totals": self.totals, "shards": self.shards}
        _write_atomic(self.root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
