"""The answer store: compact shards, a manifest, and resuming after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from specchat.distill.store import MANIFEST, Record, Shard, Store, StoreError, read_shard, shard_name

SETTINGS = {"batch_size": 3, "seed": 1, "target": "tiny"}


def shard(index: int, rows: int = 3, length: int = 5) -> Shard:
    records = [Record("magpie" if n % 2 else "summary", [{"role": "user", "content": f"q{index}-{n}"}],
                      [1, 2, 40_000 + n], [index * 100 + n + t for t in range(length)],
                      [65_000 - t for t in range(length)]) for n in range(rows)]
    return Shard(index, records, {"seed": index, "sampled": False, "seconds": 1.5, "answer_seconds": 1.0,
                                   "question_tokens": 7})


def test_a_shard_reads_back_as_written_in_two_bytes_a_token(tmp_path):
    store = Store(tmp_path, SETTINGS, vocab_size=49_152)
    written = shard(0)
    store.append(written)
    assert read_shard(tmp_path / shard_name(0)) == written
    with np.load(tmp_path / shard_name(0)) as z:
        assert z["answer"].dtype == np.uint16 and z["prompt"].dtype == np.uint16
    wide = Store(tmp_path / "wide", SETTINGS, vocab_size=151_936)  # a Qwen vocabulary does not fit
    big = Shard(0, [Record("wide", [], [150_000], [70_000], [70_001])], {})
    wide.append(big)
    assert read_shard(tmp_path / "wide" / shard_name(0)) == big


def test_the_manifest_keeps_totals_and_a_reopened_store_continues(tmp_path):
    store = Store(tmp_path, SETTINGS, vocab_size=49_152)
    for i in range(3):
        store.append(shard(i))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["totals"] == {"shards": 3, "answers": 9, "answer_tokens": 45, "prompt_tokens": 27,
                                  "question_tokens": 21, "seconds": 4.5, "answer_seconds": 3.0,
                                  "answer_tokens_per_s": 10.0,
                                  "kinds": {"magpie": 3, "summary": 6}}
    assert manifest["shards"][1]["kinds"] == {"summary": 2, "magpie": 1}
    again = Store(tmp_path, SETTINGS, vocab_size=49_152)
    assert again.next_index == 3 and again.totals == manifest["totals"]
    with pytest.raises(StoreError, match="out of order"):
        again.append(shard(5))


def test_other_settings_are_refused(tmp_path):
    Store(tmp_path, SETTINGS, vocab_size=49_152).append(shard(0))
    with pytest.raises(StoreError, match=r"other settings \(seed: 1 \(now 2\)\)"):
        Store(tmp_path, {**SETTINGS, "seed": 2}, vocab_size=49_152)
    with pytest.raises(StoreError, match=r"target: \"tiny\" \(now null\)"):  # one setting fewer
        Store(tmp_path, {"batch_size": 3, "seed": 1}, vocab_size=49_152)
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="not a directory"):
        Store(tmp_path / "file", SETTINGS, vocab_size=49_152)


def test_a_shard_renamed_before_its_manifest_line_is_kept_and_a_half_write_dropped(tmp_path):
    store = Store(tmp_path, SETTINGS, vocab_size=49_152)
    for i in range(2):
        store.append(shard(i))
    # Killed between the shard's rename and the manifest's: the manifest lacks shard 1.
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["shards"] = manifest["shards"][:1]
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    # ...and mid-write of shard 2: a temporary file, cut short.
    (tmp_path / (shard_name(2) + ".tmp")).write_bytes(b"PK\x03\x04 cut")
    again = Store(tmp_path, SETTINGS, vocab_size=49_152)
    assert again.next_index == 2 and again.totals["answers"] == 6
    assert not list(tmp_path.glob("*.tmp"))
    assert json.loads((tmp_path / MANIFEST).read_text())["totals"]["shards"] == 2
    (tmp_path / shard_name(0)).unlink()
    with pytest.raises(StoreError, match=r"missing shards \[0\]"):
        Store(tmp_path, SETTINGS, vocab_size=49_152)


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from distill.test_store import SETTINGS, shard
from specchat.distill.store import Store
store = Store(Path(sys.argv[1]), SETTINGS, vocab_size=49_152)
while True:
    store.append(shard(store.next_index, rows=20, length=2_000))  # 80 kB a shard: a kill may land mid-write
    print(store.next_index, flush=True)
"""


@pytest.mark.slow  # a fresh interpreter imports torch (specchat.distill does)
def test_a_run_killed_by_sigkill_loses_at_most_the_shard_it_was_writing(tmp_path):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(tests=tests), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        reported = [int(writer.stdout.readline()) for _ in range(3)]
    finally:
        writer.send_signal(signal.SIGKILL)  # wherever it is: encoding, writing, renaming
        writer.wait()
    assert writer.returncode == -signal.SIGKILL and reported == [1, 2, 3]
    store = Store(tmp_path, SETTINGS, vocab_size=49_152)
    done = store.next_index
    assert done >= 3  # every shard it reported is kept
    assert [read_shard(p) for p in store.paths()] == [shard(i, rows=20, length=2_000) for i in range(done)]
    assert store.totals["answer_tokens"] == done * 20 * 2_000
    store.append(shard(done))  # and it continues where it stopped
    assert Store(tmp_path, SETTINGS, vocab_size=49_152).next_index == done + 1
