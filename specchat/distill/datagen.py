"""Self-distillation data: the target's own answers to the training prompts.

Answers are generated in batches (batch_decode.py: batching is what makes a 135M
model produce hundreds of tokens/s on a CPU instead of ~20) and written one shard per
batch, so an interrupted run resumes at the first missing shard. The target answers
in fp32 by default, as it did for the shipped drafter; `--target-quant fp16` answers
fbgemm-packed, 1.5× as fast here, but the drafter trained on 2,432 such answers did a
little worse on the bench (acceptance at k = 4 0.27 against 0.29; not separated from
the sampled batches' different random draws).

With `--derived-share` above 0, part of every batch after the first is built on
earlier answers (followups.py: second turns, summaries, questions over documents), so
shard i depends on shards before it; a resumed run builds the missing shards' prompts
from the shards on disk, as the first run would have.

Each record keeps the prompt ids, its chat (`messages`, `text` the last user turn,
`derived` whether it was built on earlier answers), the answer ids, and `labels`: the target's
argmax at every answer position, and its top-k log-probabilities there. For greedy batches the labels are the answer shifted
by one; for sampled batches they are what greedy decoding would have said there, which
is what a greedy drafter must predict, seen in contexts greedy decoding rarely reaches.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from specchat.distill.batch_decode import decode_batch
from specchat.distill.followups import Exchange, derived_count, derived_messages
from specchat.distill.prompts import PROMPT_SETS, make_prompts


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
    # Which first turns (prompts.py), and the share of each batch after the first built
    # on earlier answers (followups.py). The defaults make the shipped drafter's data;
    # "wide" with 0.375 did not beat it on the bench (README, Drafters).
    prompt_set: str = field(default="templated", metadata={"choices": PROMPT_SETS})
    derived_share: float = 0.0
    seed: int = 0


# What work dirs made before these settings existed used.
_BEFORE_PROMPT_SETS = {"prompt_set": "templated", "derived_share": 0.0}


def answering_quant(asked: str) -> str:
    """The precision the target answers in: `fp16` (fbgemm-packed) or `none` (fp32)."""
    from specchat.engine.cpu.quant import fp16_linear

    if asked == "auto":
        return "fp16" if fp16_linear.available() else "none"
    if asked == "fp16" and not fp16_linear.available():
        raise ValueError("--target-quant fp16 needs fbgemm's fp16 GEMM (an x86 CPU with AVX2); use none")
    return asked


def as_messages(chat: str | list[dict]) -> list[dict]:
    """A first turn's text as a one-message chat; a chat as it is."""
    return [{"role": "user", "content": chat}] if isinstance(chat, str) else chat


def chat_ids(tokenizer, chat: str | list[dict]) -> list[int]:
    """The prompt exactly as ChatSession templates it (no system prompt): a first
    turn's text, or the messages of a chat ending with the user's turn."""
    text = tokenizer.apply_chat_template(as_messages(chat), tokenize=False, add_generation_prompt=True)
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
    if not 0.0 <= settings.derived_share <= 1.0:
        raise ValueError(f"--derived-share must be between 0 and 1, not {settings.derived_share}")
    data_dir.mkdir(parents=True, exist_ok=True)
    # Shard i depends on everything but the prompt count (the prompt list is
    # prefix-stable), so a run with more prompts extends a run with fewer.
    recorded = data_dir / "settings.json"
    mine = {k: v for k, v in asdict(settings).items() if k != "prompts"}
    if recorded.exists() and {**_BEFORE_PROMPT_SETS, **json.loads(recorded.read_text())} != mine:
        raise ValueError(f"{data_dir} holds data made with other settings "
                         f"({recorded.read_text().strip()}); use another work dir or remove it")
    recorded.write_text(json.dumps(mine, indent=2) + "\n")
    layout = batch_layout(settings)
    texts = iter(make_prompts(sum(n - d for n, d in layout), settings.seed, settings.prompt_set))
    earlier: list[Exchange] = []  # first-turn exchanges of the shards before this one
    paths = []
    for index, (size, derived) in enumerate(layout):
        path = shard_path(data_dir, index)
        paths.append(path)
        chats: list = [next(texts) for _ in range(size - derived)]  # consumed even when the shard exists
        if not path.exists():
            rng = random.Random(settings.seed * 1_000_003 + index)
            chats += [derived_messages(rng, earlier) for _ in range(derived)]
            sampled = settings.sampled_every > 0 and index % settings.sampled_every == settings.sampled_every - 1
            records = generate_batch(model, tokenizer, [chat_ids(tokenizer, c) for c in chats],
                                     settings, sampled, settings.seed * 100_003 + index)
            for n, (chat, rec) in enumerate(zip(chats, records)):
                rec["derived"] = n >= size - derived
                rec["messages"] = as_messages(chat)
                rec["text"] = rec["messages"][-1]["content"]
            tmp = path.with_suffix(".tmp")
            torch.save(records, tmp)
            tmp.replace(path)  # a shard is either whole or absent
        elif settings.derived_share > 0:
            records = torch.load(path)
        if settings.derived_share > 0:
            earlier += [Exchange(rec["text"], tokenizer.decode(rec["answer"], skip_special_tokens=True))
                        for rec in records if not rec.get("derived", False)]
        if progress:
            progress(index + 1, len(layout))
    return paths


def batch_layout(settings: DataSettings) -> list[tuple[int, int]]:
    """(prompts, of which built on earlier answers) for every batch, in order."""
    sizes = [min(settings.batch_size, settings.prompts - start)
             for start in range(0, settings.prompts, settings.batch_size)]
    return [(n, derived_count(i, n, settings.derived_share)) for i, n in enumerate(sizes)]


def load_records(paths: list[Path]) -> list[dict]:
    return [rec for p in paths for rec in torch.load(p)]
