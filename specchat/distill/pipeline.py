"""`specchat distill`: generate the target's answers, train the drafter, write it.

Every stage is resumable: data shards and the training checkpoint live in the work
directory, so running the same command again picks up where it stopped. The written
weights carry provenance.json: the command, every setting, the seed, data statistics
and the held-out evaluation.
"""

from __future__ import annotations

import copy
import platform
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from specchat.distill.datagen import DataSettings, answering_quant, generate_data, load_records
from specchat.distill.features import compute_features, load_states
from specchat.distill.train import (TrainSettings, evaluate, evaluate_state_drafter, init_from_target, make_example,
                                   train)
from specchat.distill.vocab import choose_vocab, coverage, index_map
from specchat.engine.cpu.quant.fp16_linear import pack_fp16
from specchat.engine.drafters.draft_model import DraftConfig


def _bar(total: int, desc: str, initial: int = 0):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)


def _batches(bar):
    """A (done, total) progress callback that moves `bar`."""
    def on_batch(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
    return on_batch


def split_holdout(records: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): the held-out part is greedy answers only, since greedy
    acceptance is what it estimates; at least one when there are any."""
    greedy = [i for i, r in enumerate(records) if not r["sampled"]]
    n = max(1, round(share * len(greedy))) if greedy and share > 0 else 0
    held = set(random.Random(seed).sample(greedy, n))
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def run(work_dir: Path, out_dir: Path, data: DataSettings, settings: TrainSettings, *,
        target_spec: str = "embedded", argv: list[str] | None = None, log=print) -> dict:
    from specchat.models import load_target

    torch.manual_seed(settings.seed)
    # Loaded in fp32: the drafter's layers are initialised from its weights, which the
    # fp16-packed copy that answers (datagen.answering_quant) does not expose; bf16
    # batched generation on a CPU without bf16 units is several times slower.
    target = load_target(target_spec, device="cpu", quant="none", dtype=torch.float32, progress=log)
    tokenizer = target.tokenizer
    data = replace(data, target_quant=answering_quant(data.target_quant))  # recorded as run
    answering = pack_fp16(copy.deepcopy(target.model)) if data.target_quant == "fp16" else target.model

    # Bars are closed before an error is reported, so the error has its own line.
    with _bar(0, "answers (batches)") as bar:
        paths = generate_data(answering, tokenizer, work_dir / "data", data, _batches(bar))
    del answering

    records = load_records(paths)
    if settings.reads_target_states:
        with _bar(0, "target states (batches)") as bar:
            states = load_states(compute_features(target.model, paths, _batches(bar)))
        for rec, rec_states in zip(records, states):
            rec["states"] = rec_states
    train_recs, held = split_holdout(records, settings.holdout, settings.seed)
    vocab = choose_vocab(train_recs, settings.draft_vocab, always=(tokenizer.eos_token_id,))
    table = index_map(vocab, target.model.config.vocab_size)
    cfg = DraftConfig.from_target(target.model.config, settings.layers, len(vocab), settings.reads_target_states)
    model = init_from_target(target.model, cfg, vocab, settings.norm_scale)
    stats = {"answers": len(records), "answer_tokens": sum(len(r["answer"]) for r in records),
             "train_answers": len(train_recs), "heldout_answers": len(held),
             "vocab_coverage_train": round(coverage(train_recs, vocab), 4),
             "vocab_coverage_heldout": round(coverage(held, vocab), 4) if held else None}
    log(f"data: {stats}")
    evaluate_held = (lambda lookup: evaluate_state_drafter(model, held, [r["states"] for r in held],
                                                           use_lookup=lookup)) \
        if settings.reads_target_states else (lambda lookup: evaluate(model, held, table, use_lookup=lookup))
    before = evaluate_held(False) if held else {}

    # Named by what shapes it, so a run on more data starts its own instead of failing.
    kind = "states-" if settings.reads_target_states else ""
    checkpoint = work_dir / f"checkpoint-{kind}{settings.layers}L-{len(vocab)}v-{len(records)}a-s{settings.seed}.pt"
    started = time.time()
    with _bar(settings.steps, "training") as bar:
        def on_step(step: int, loss: float, acc: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", agree=f"{acc:.3f}", refresh=True)
        train(model, [make_example(r, table, r.get("states")) for r in train_recs], settings, checkpoint, on_step)
    after = evaluate_held(False) if held else {}
    with_lookup = evaluate_held(True) if held else {}
    log(f"held-out greedy estimate before training {before}, after {after}, with lookup {with_lookup}")

    provenance = {
        "command": "specchat distill " + " ".join(argv if argv is not None else sys.argv[1:]),
        "target": {"spec": target_spec, "name": target.name, "precision": target.precision},
        "data_settings": asdict(data), "train_settings": asdict(settings), "seed": settings.seed,
        "data": stats, "heldout_eval_before": before, "heldout_eval_after": after,
        "heldout_eval_after_with_lookup": with_lookup,
        "train_seconds_last_run": round(time.time() - started, 1),
        "versions": {"torch": torch.__version__, "python": platform.python_version(),
                     "transformers": __import__("transformers").__version__},
    }
    model.save(out_dir, provenance)
    log(f"wrote {out_dir}")
    return provenance
