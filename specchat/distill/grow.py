"""`specchat distill --data DIR --grow-to N`: grow a store of the target's answers.

Each shard is one batch: its prompts are drawn kind by kind (sources.py; the user
turns the target writes itself in one sampled batch, magpie.py), then the target
answers them all in one batch (batch_decode.py), greedily but for every
`--sampled-every`-th shard, and the shard is appended to DIR (store.py). A run stops
once DIR holds N answer tokens; run it again with a larger N to grow the same data,
or after an interruption (Ctrl+C, a kill) to continue where it stopped.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from specchat.distill.heldout import HeldOut, default_files, normalised
from specchat.distill.sources import (FRAMES, WRITTEN, Exchange, Pool, asked, built, fallback, fresh, plan,
                                      written_chat)
from specchat.distill.store import Record, Shard, Store, StoreError, read_shard


@dataclass
class GrowSettings:
    batch_size: int = 64  # answers a shard
    max_new_tokens: int = 128  # of each answer: what `specchat bench` generates
    question_tokens: int = 64  # most ids of a turn the target writes
    max_prompt_tokens: int = 768  # longer chats (documents) are built again
    # Prompt ids a decoding batch holds, padded: longer prompts decode in groups of
    # their own (batching.in_length_groups), so short ones are not padded to them.
    tokens_per_batch: int = 8192
    sampled_every: int = 4  # every n-th shard's answers are sampled (0: greedy only)
    answer_temperature: float = 0.7
    target_quant: str = "auto"  # how the target answers: fp16 (packed) where it runs, else none (fp32)
    seed: int = 0


def exchanges_of(shard: Shard, tokenizer) -> list[Exchange]:
    eos = tokenizer.eos_token_id
    return [Exchange(r.kind, r.messages, tokenizer.decode([t for t in r.answer if t != eos], skip_special_tokens=True))
            for r in shard.records]


def _chat_ids(tokenizer, chat: list[dict]) -> list[int]:
    from specchat.distill.datagen import chat_ids
    return chat_ids(tokenizer, chat)


def _candidates(i: int, kind: str, rng: random.Random, pool: Pool, asks: dict, texts: dict):
    """(kind, chat) for row i, best first: its own, then stand-ins (a built turn may
    repeat one seen or run too long; a written one may have been dropped)."""
    if i in asks:
        if texts[i]:
            yield kind, written_chat(asks[i], texts[i])
        yield ("followup-fixed" if kind == "followup" else "wide"), fallback(kind, rng, asks[i])
    else:
        for _ in range(4):
            text = built(kind, rng, pool)
            if text:
                yield kind, [{"role": "user", "content": text}]
    for _ in range(4):
        yield "wide", fallback("wide", rng, None)


def make_shard(model, tokenizer, index: int, settings: GrowSettings, pool: Pool, heldout: HeldOut) -> Shard:
    """Shard `index`: its prompts, built on `pool`, and the target's answers."""
    import torch

    from specchat.distill.batch_decode import decode_batch
    from specchat.distill.batching import in_length_groups
    from specchat.distill.magpie import write_turns

    started = time.perf_counter()
    seed = settings.seed * 1_000_003 + index
    rng = random.Random(seed)
    kinds = plan(rng, settings.batch_size, len(pool.exchanges))
    asks = {i: asked(k, rng, pool) for i, k in enumerate(kinds) if k in WRITTEN}
    written = write_turns(model, tokenizer, list(asks.values()), seed=seed, max_tokens=settings.question_tokens,
                          seen=pool.seen, heldout=heldout, tokens_per_batch=settings.tokens_per_batch)
    texts = {i: w.text for i, w in zip(asks, written)}
    rows: list[tuple[str, list[dict], list[int]]] = []
    for i, kind in enumerate(kinds):
        # The first new candidate that fits; none (rare): the shard is a row shorter.
        for row_kind, chat in _candidates(i, kind, rng, pool, asks, texts):
            ids = _chat_ids(tokenizer, chat)
            if len(ids) <= settings.max_prompt_tokens and fresh(chat, pool, heldout):
                pool.seen.add(normalised(chat[-1]["content"]))
                rows.append((row_kind, chat, ids))
                break
    sampled = settings.sampled_every > 0 and index % settings.sampled_every == settings.sampled_every - 1
    generator = torch.Generator().manual_seed(seed)
    answers = in_length_groups([ids for _, _, ids in rows], len, settings.tokens_per_batch, lambda group: decode_batch(
        model, group, max_new_tokens=settings.max_new_tokens, eos_id=tokenizer.eos_token_id, top_k=1,
        temperature=settings.answer_temperature if sampled else None, generator=generator))
    records = [Record(kind, chat, ids, a.ids, [int(t[0]) for t in a.top_ids])
               for (kind, chat, ids), a in zip(rows, answers)]
    meta = {"seed": seed, "sampled": sampled, "question_tokens": sum(w.tokens for w in written),
            "seconds": round(time.perf_counter() - started, 2)}
    return Shard(index, records, meta)


def grow(model, tokenizer, store: Store, settings: GrowSettings, grow_to: int, heldout: HeldOut,
         on_shard=None) -> dict:
    """Append shards to `store` until it holds `grow_to` answer tokens; its totals."""
    pool = Pool()
    for path in store.paths():
        for exchange in exchanges_of(read_shard(path), tokenizer):
            pool.add(exchange)
    while store.totals["answer_tokens"] < grow_to:
        shard = make_shard(model, tokenizer, store.next_index, settings, pool, heldout)
        summary = store.append(shard)
        for exchange in exchanges_of(shard, tokenizer):
            pool.add(exchange)
        if on_shard:
            on_shard(summary, store.totals)
    return store.totals


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specchat distill --data DIR",
        description="Grow a store of the target's own answers in DIR, to train a drafter on. "
                    "Resumable: run again (with a larger --grow-to to grow it) to continue.")
    parser.add_argument("--data", type=Path, required=True, metavar="DIR", help="where the shards go")
    parser.add_argument("--grow-to", type=int, required=True, metavar="N",
                        help="answer tokens DIR should hold when the run ends")
    parser.add_argument("--target", default="embedded", help="target model spec (default: embedded)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--heldout", type=Path, action="append", default=None, metavar="FILE",
                        help="bench prompt file whose prompts the data must not hold or be near "
                             "(repeatable; default: the held-out sets in docs/ of a source checkout)")
    for f in fields(GrowSettings):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=f"(default: {f.default})")
    return parser


def _check(args) -> None:
    if args.grow_to <= 0:
        raise StoreError(f"--grow-to must be a positive number of tokens, not {args.grow_to}")
    for name in ("batch_size", "max_new_tokens", "question_tokens", "max_prompt_tokens", "tokens_per_batch"):
        if getattr(args, name) <= 0:
            raise StoreError(f"--{name.replace('_', '-')} must be positive")
    if args.sampled_every < 0 or args.answer_temperature <= 0:
        raise StoreError("--sampled-every must be >= 0 and --answer-temperature > 0")
    if args.target_quant not in ("none", "fp16", "auto"):
        raise StoreError(f"--target-quant must be none, fp16 or auto, not {args.target_quant}")
    for path in args.heldout or []:
        if not path.is_file():
            raise StoreError(f"--heldout {path}: no such file")


def _progress(grow_to: int, initial: int):
    from tqdm.auto import tqdm
    return tqdm(total=grow_to, initial=min(initial, grow_to), desc="answer tokens", unit="tok", unit_scale=True,
                dynamic_ncols=True, file=sys.stderr, smoothing=0.3)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = GrowSettings(**{f.name: getattr(args, f.name) for f in fields(GrowSettings)})
    try:
        _check(args)
        heldout = HeldOut.from_files(args.heldout or default_files(), FRAMES)
        return _run(args, settings, heldout)
    except (StoreError, ValueError, OSError) as exc:
        print(f"specchat distill: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("specchat distill: stopped; run the same command again to continue", file=sys.stderr)
        return 130


def _run(args, settings: GrowSettings, heldout: HeldOut) -> int:
    import torch

    from specchat.distill.datagen import answering_quant
    from specchat.models import load_target

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data.exists() and not args.data.is_dir():
        raise StoreError(f"--data {args.data} is not a directory")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    target = load_target(args.target, device="cpu", quant="none", dtype=torch.float32, progress=log)
    quant = answering_quant(settings.target_quant)
    recorded = {**asdict(settings), "target_quant": quant, "target": target.name}
    store = Store(args.data, recorded, target.model.config.vocab_size)
    done = store.totals["answer_tokens"]
    if done >= args.grow_to:
        log(f"{args.data} already holds {done:,} answer tokens ({store.totals['shards']} shards)")
        return 0
    model = target.model
    if quant == "fp16":
        from specchat.engine.cpu.quant.fp16_linear import pack_fp16
        model = pack_fp16(model)
    with _progress(args.grow_to, done) as bar:
        def on_shard(summary: dict, totals: dict) -> None:
            bar.update(min(totals["answer_tokens"], args.grow_to) - bar.n)
            bar.set_postfix(shards=totals["shards"], answers=totals["answers"], refresh=True)
        totals = grow(model, target.tokenizer, store, settings, args.grow_to, heldout, on_shard)
    log(f"{args.data}: {totals['answer_tokens']:,} answer tokens in {totals['shards']} shards "
        f"({totals['answers']:,} answers, {totals['answer_tokens_per_s']} answer tokens/s over all runs)")
    return 0
