"""`specchat distill --data DIR --grow-to N`: grow a store of the target's answers.

Each shard is `--batch-size` rows: its prompts are drawn kind by kind (sources.py;
the user turns the target writes itself, sampled, magpie.py), then the target
answers them one at a time through the engine as `specchat run` runs it
(answerer.py: its CPU decoder, the shipped drafter drafting, lossless), greedily
but for every `--sampled-every`-th shard, and the shard is appended to DIR
(store.py). A run stops once DIR holds N answer tokens; run it again with a larger
N to grow the same data, or after an interruption (Ctrl+C, a kill) to continue
where it stopped.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from specchat.distill.heldout import HeldOut, default_files, normalised
from specchat.distill.sources import (FRAMES, WRITTEN, Exchange, Pool, asked, built, fallback, fresh, plan,
                                      written_chat)
from specchat.distill.store import Record, Shard, Store, StoreError, read_shard

if TYPE_CHECKING:  # the answerer imports torch: not needed to refuse bad input
    from specchat.distill.answerer import Answerer


@dataclass
class GrowSettings:
    batch_size: int = 64  # answers a shard
    max_new_tokens: int = 128  # of each answer: what `specchat bench` generates
    question_tokens: int = 64  # most ids of a turn the target writes
    max_prompt_tokens: int = 768  # longer chats (documents) are built again
    sampled_every: int = 4  # every n-th shard's answers are sampled (0: greedy only)
    answer_temperature: float = 0.7
    # The target's weight format, as `specchat run --quant`: auto is the one chosen
    # for this machine (recorded as chosen, so another machine's choice is refused).
    quant: str = "auto"
    drafter: str = "smoldraft"  # drafts every answer; greedy answers do not depend on it
    # Draft length of sampled rows, answers and written turns (fixed: reproducible
    # draws; 0: plain sampling).
    sampled_k: int = 3
    seed: int = 0


QUANTS = ("auto", "q4_1", "int4", "int4-q8head", "fp16", "none")


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


def make_shard(answerer: Answerer, index: int, settings: GrowSettings, pool: Pool, heldout: HeldOut) -> Shard:
    """Shard `index`: its prompts, built on `pool`, and the target's answers."""
    import torch

    from specchat.distill.magpie import write_turns
    from specchat.engine.loop.sampling import SamplingSettings

    started = time.perf_counter()
    tokenizer = answerer.tokenizer
    seed = settings.seed * 1_000_003 + index
    rng = random.Random(seed)
    kinds = plan(rng, settings.batch_size, len(pool.exchanges))
    asks = {i: asked(k, rng, pool) for i, k in enumerate(kinds) if k in WRITTEN}
    written = write_turns(answerer, list(asks.values()), seed=seed, max_tokens=settings.question_tokens,
                          seen=pool.seen, heldout=heldout, sampled_k=settings.sampled_k)
    texts = {i: w.text for i, w in zip(asks, written)}
    asking = time.perf_counter() - started
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
    sampling = SamplingSettings(temperature=settings.answer_temperature) if sampled else None
    generator = torch.Generator().manual_seed(seed)
    records = []
    for kind, chat, ids in rows:
        answer = answerer.answer(ids, settings.max_new_tokens, sampling, generator, settings.sampled_k)
        labels = answerer.argmax_labels(ids, answer) if sampled else list(answer)
        records.append(Record(kind, chat, ids, answer, labels))
    seconds = time.perf_counter() - started
    meta = {"seed": seed, "sampled": sampled, "question_tokens": sum(w.tokens for w in written),
            "seconds": round(seconds, 2), "answer_seconds": round(seconds - asking, 2)}
    return Shard(index, records, meta)


def grow(answerer: Answerer, store: Store, settings: GrowSettings, grow_to: int, heldout: HeldOut,
         on_shard=None) -> dict:
    """Append shards to `store` until it holds `grow_to` answer tokens; its totals."""
    tokenizer = answerer.tokenizer
    pool = Pool()
    for path in store.paths():
        for exchange in exchanges_of(read_shard(path), tokenizer):
            pool.add(exchange)
    while store.totals["answer_tokens"] < grow_to:
        shard = make_shard(answerer, store.next_index, settings, pool, heldout)
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
    for name in ("batch_size", "max_new_tokens", "question_tokens", "max_prompt_tokens"):
        if getattr(args, name) <= 0:
            raise StoreError(f"--{name.replace('_', '-')} must be positive")
    if args.sampled_every < 0 or args.sampled_k < 0 or args.answer_temperature <= 0:
        raise StoreError("--sampled-every and --sampled-k must be >= 0, --answer-temperature > 0")
    if args.quant not in QUANTS:
        raise StoreError(f"--quant must be one of {', '.join(QUANTS)}, not {args.quant}")
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

    from specchat.distill.answerer import load_answerer

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.data.exists() and not args.data.is_dir():
        raise StoreError(f"--data {args.data} is not a directory")
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    answerer = load_answerer(args.target, settings.drafter, None if settings.quant == "auto" else settings.quant,
                             log)
    store = Store(args.data, recorded_settings(settings, answerer), answerer.target.model.config.vocab_size)
    done = store.totals["answer_tokens"]
    if done >= args.grow_to:
        log(f"{args.data} already holds {done:,} answer tokens ({store.totals['shards']} shards)")
        return 0
    with _progress(args.grow_to, done) as bar:
        def on_shard(summary: dict, totals: dict) -> None:
            bar.update(min(totals["answer_tokens"], args.grow_to) - bar.n)
            bar.set_postfix(shards=totals["shards"], answers=totals["answers"], refresh=True)
        totals = grow(answerer, store, settings, args.grow_to, heldout, on_shard)
    log(f"{args.data}: {totals['answer_tokens']:,} answer tokens in {totals['shards']} shards "
        f"({totals['answers']:,} answers, {totals['answer_tokens_per_s']} answer tokens/s over all runs)")
    return 0


def recorded_settings(settings: GrowSettings, answerer: Answerer) -> dict:
    """What shapes the shards, as the manifest keeps it: the settings with the
    format the target ran in (the chosen one for auto), the target's and drafter's
    names, and how answers were made (a store grown by batched decoding is refused)."""
    return {**asdict(settings), "quant": answerer.target.precision, "target": answerer.target.name,
            "drafter": answerer.drafter.name, "answered_by": "engine"}
