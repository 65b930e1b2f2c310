"""Self-distillation data: the target's own answers to the training prompts.

Answers are generated in batches (left-padded, one `generate` per batch: batching is
what makes a 135M model produce ~70 tokens/s on one CPU thread instead of ~10) and
written one shard per batch, so an interrupted run resumes at the first missing shard.

Each record keeps the templated prompt ids, the answer ids, and `labels`: the target's
argmax at every answer position, and its top-k log-probabilities there. For greedy batches the labels are the answer shifted
by one; for sampled batches they are what greedy decoding would have said there, which
is what a greedy drafter must predict, seen in contexts greedy decoding rarely reaches.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from specchat.distill.prompts import make_prompts


@dataclass
class DataSettings:
    prompts: int = 2432  # what the shipped drafter was trained on (76 batches of 32)
    batch_size: int = 32
    max_new_tokens: int = 128  # what `specchat bench` generates per answer
    sampled_every: int = 4  # every n-th batch is sampled (0 = greedy only)
    temperature: float = 0.7
    top_k_saved: int = 16  # target log-probs kept per position
    seed: int = 0


class _TopRecorder:
    """A logits processor that keeps the target's top-k log-probabilities at every
    generation step (it runs before temperature is applied, so they are the model's
    own). Soft labels teach a small drafter more per token than the argmax alone."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.ids: list[torch.Tensor] = []
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = torch.log_softmax(scores.float(), dim=-1).topk(self.k, dim=-1)
        self.ids.append(top.indices.to(torch.int32))
        self.logprobs.append(top.values.to(torch.float16))
        return scores


def chat_ids(tokenizer, user_text: str) -> list[int]:
    """The prompt exactly as ChatSession templates a first turn (no system prompt)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                         tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def shard_path(data_dir: Path, index: int) -> Path:
    return data_dir / f"shard_{index:05d}.pt"


def generate_batch(model, tokenizer, prompts: list[list[int]], settings: DataSettings,
                   sampled: bool, seed: int) -> list[dict]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    recorder = _TopRecorder(settings.top_k_saved)
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                             do_sample=sampled, temperature=settings.temperature if sampled else None,
                             top_p=None, top_k=None, logits_processor=[recorder],
                             pad_token_id=pad, eos_token_id=eos)
    top_ids = torch.stack(recorder.ids, dim=1)  # (batch, steps, k), best first
    top_lp = torch.stack(recorder.logprobs, dim=1)
    records = []
    for row, prompt in enumerate(prompts):
        answer = out[row, width:].tolist()
        if eos in answer:
            answer = answer[: answer.index(eos) + 1]
        n = len(answer)
        records.append({"prompt": prompt, "answer": answer, "labels": top_ids[row, :n, 0].tolist(),
                        "top_ids": top_ids[row, :n].clone(), "top_logprobs": top_lp[row, :n].clone(),
                        "sampled": sampled})
    return records


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
