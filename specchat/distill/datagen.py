"""Self-distillation data: the target's own answers to the training prompts.

Answers are generated in batches (batch_decode.py: batching is what makes a 135M
model produce hundreds of tokens/s on a CPU instead of ~20) and written one shard per
batch, so an interrupted run resumes at the first missing shard. The target answers
in fp32 by default, as it did for the shipped drafter; `--target-quant fp16` answers
fbgemm-packed, 1.5× as fast here, but the drafter trained on 2,432 such answers did a
little worse on the bench (acceptance at k = 4 0.27 against 0.29; not separated from
the sampled batches' different random draws).

Each record keeps the templated prompt ids, the answer ids, and `labels`: the target's
argmax at every answer position, and its top-k log-probabilities there. For greedy batches the labels are the answer shifted
by one; for sampled batches they are what greedy decoding would have said there, which
is what a greedy drafter must predict, seen in contexts greedy decoding rarely reaches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from specchat.distill.batch_decode import decode_batch
from specchat.distill.prompts import make_prompts


@dataclass
class DataSettings:
    prompts: int = 2432  # what the shipped drafter was trained on
    # 64 answers a batch cost ~20% less per answer than 32 here; wider, reading the
    # KV cache (fp32, left-padded) outweighs reading the weights.
    batch_size: int = 64
    max_new_tokens: int = 128  # what `specchat bench` generates per answer
    sampled_every: int = 4  # every n-th batch is sampled (0 = greedy only)
    temperature: float = 0.7
    top_k_saved: int = 16  # target log-probs kept per position
    # How the target answers: none (fp32), fp16 (packed), auto (fp16 where it runs).
    target_quant: str = field(default="none", metadata={"choices": ("none", "fp16", "auto")})
    seed: int = 0


def answering_quant(asked: str) -> str:
    """The precision the target answers in: `fp16` (fbgemm-packed) or `none` (fp32)."""
    from specchat.engine import fp16_linear

    if asked == "auto":
        return "fp16" if fp16_linear.available() else "none"
    if asked == "fp16" and not fp16_linear.available():
        raise ValueError("--target-quant fp16 needs fbgemm's fp16 GEMM (an x86 CPU with AVX2); use none")
    return asked


def chat_ids(tokenizer, user_text: str) -> list[int]:
    """The prompt exactly as ChatSession templates a first turn (no system prompt)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                         tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shard_path(data_dir: Path, index: int) -> Path:
    return data_dir / f"shard_{index:05d}.pt"


def generate_batch(model, tokenizer, prompts: list[list[int]], settings: DataSettings,
                   sampled: bool, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    answers = decode_batch(model, prompts, max_new_tokens=settings.max_new_tokens, eos_id=tokenizer.eos_token_id,
                           top_k=settings.top_k_saved, temperature=settings.temperature if sampled else None,
                           generator=generator)
    return [{"prompt": prompt, "answer": a.ids, "labels": [int(t[0]) for t in a.top_ids],
             "top_ids": torch.stack(a.top_ids), "top_logprobs": torch.stack(a.top_logprobs), "sampled": sampled}
            for prompt, a in zip(prompts, answers)]


def generate_data(model, tokenizer, data_dir: Path, settings: DataSettings,
                  progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write every missing shard; return all shard paths in order."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Shard i depends on everything but the prompt count (the prompt list is
    # prefix-stable), so a run with more prompts extends a run with fewer.
    recorded = data_dir / "settings.json"
    mine = {k: v for k, v in asdict(settings).items() if k != "prompts"}
    if recorded.exists() and json.loads(recorded.read_text()) != mine:
        raise ValueError(f"{data_dir} holds data made with other settings "
                         f"({recorded.read_text().strip()}); use another work dir or remove it")
    recorded.write_text(json.dumps(mine, indent=2) + "\n")
    texts = make_prompts(settings.prompts, settings.seed)
    order = list(range(len(texts)))
    batches = [order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
    paths = []
    for index, batch in enumerate(batches):
        path = shard_path(data_dir, index)
        paths.append(path)
        if not path.exists():
            sampled = settings.sampled_every > 0 and index % settings.sampled_every == settings.sampled_every - 1
            records = generate_batch(model, tokenizer, [chat_ids(tokenizer, texts[i]) for i in batch],
                                     settings, sampled, settings.seed * 100_003 + index)
            for i, rec in zip(batch, records):
                rec["text"] = texts[i]
            tmp = path.with_suffix(".tmp")
            torch.save(records, tmp)
            tmp.replace(path)  # a shard is either whole or absent
        if progress:
            progress(index + 1, len(batches))
    return paths


def load_records(paths: list[Path]) -> list[dict]:
    return [rec for p in paths for rec in torch.load(p)]
