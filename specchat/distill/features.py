"""The target's own hidden states over its answers, for a drafter that reads them.

A feature drafter (EAGLE-style) drafts from the target's last hidden state (after
the final norm: what the output layer reads) rather than from tokens alone. Training
it needs that state at every position of every answer; one batched pass of the target
over prompt + answer gives them all. Stored in fp16, one file per data shard, so a
run resumes at the first missing file like the answers themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from specchat.distill.batching import length_groups


@torch.no_grad()
def hidden_states(model, sequences: list[list[int]], tokens_per_batch: int = 4096) -> list[torch.Tensor]:
    """[len(seq), hidden] final-normed hidden states for each sequence (fp16, CPU)."""
    decoder = model.get_decoder()
    out: list[torch.Tensor | None] = [None] * len(sequences)
    for group in length_groups(list(range(len(sequences))), lambda i: len(sequences[i]), tokens_per_batch):
        width = max(len(sequences[i]) for i in group)
        ids = torch.zeros(len(group), width, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        # Right padding: causal attention never lets a real position see a pad.
        states = decoder(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                         use_cache=False).last_hidden_state
        for row, i in enumerate(group):
            out[i] = states[row, : len(sequences[i])].to(torch.float16).cpu()
    return out  # type: ignore[return-value]


def feature_path(data_dir: Path, index: int) -> Path:
    return data_dir / f"features_{index:05d}.pt"


def compute_features(model, shard_paths: list[Path], progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write the features of every answer shard that lacks them; return their paths."""
    paths = []
    for index, shard in enumerate(shard_paths):
        path = feature_path(shard.parent, index)
        paths.append(path)
        if not path.exists():
            records = torch.load(shard)
            feats = hidden_states(model, [r["prompt"] + r["answer"] for r in records])
            tmp = path.with_suffix(".tmp")
            torch.save(feats, tmp)
            tmp.replace(path)
        if progress:
            progress(index + 1, len(shard_paths))
    return paths


def load_states(paths: list[Path]) -> list[torch.Tensor]:
    """Every answer's states, in the order of `datagen.load_records` over the same shards."""
    return [states for p in paths for states in torch.load(p)]
