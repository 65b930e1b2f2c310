"""Self-distillation of a drafter for the embedded target: `specchat distill`.

`main(argv)` is the command line; `python -m specchat.distill --help` runs it too.
The shipped drafter (specchat/weights/smoldraft) came from

    specchat distill --threads 2 --batch-size 32

when `generate()` made the answers: about 80 minutes of answer generation on this
project's shared 2-core machine (76 batches of 32, about a minute each) and 11 of
training (1,000 steps); provenance.json next to the weights records the exact command
and settings. The batched loop that answers now (batch_decode.py) gives the same fp32
greedy answers (32 of 32 compared; sampled batches draw differently) about twice as
fast, 64 at a time by default (0.6 s an answer late in stop 13, 0.4 with
`--target-quant fp16`), so the defaults run in about 40 minutes.
`--prompts 1216 --steps 600` makes the previous drafter (held out, acceptance at k = 4
with lookup 0.32 against the shipped one's 0.35).
`--prompts 4864 --layers 3 --steps 1500 --target-quant fp16` makes the best drafter so
far (held out 0.385 acceptance at k = 4; about 40 minutes of answers and 25 of
training), not shipped because its drafting costs twice as much and it was no faster
(README, Drafters). `--prompt-set wide --derived-share 0.375` widens the prompts
(followups.py); it did not help.
`--reads-target-states` trains the EAGLE-style kind instead (drafters/states_reading.py), after
one more pass of the target over the answers for its hidden states (about 15 s a
batch of 32 with two threads: ~18 minutes for the default 2,432 answers).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from specchat.distill.calibrate import MAX_NEW_TOKENS, PROMPTS
from specchat.distill.datagen import DataSettings
from specchat.distill.train import TrainSettings


def _default_work_dir() -> Path:
    from specchat.models import cache_root
    return cache_root() / "distill"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specchat distill",
        description="Train a small drafter on the target's own answers (self-distillation). "
                    "Resumable: run the same command again to continue.",
        epilog="specchat distill --data DIR --grow-to N grows a store of answers in DIR instead "
               "(grow.py; specchat distill --data DIR --help lists its options).")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="data shards and checkpoints (default: the specchat cache dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the drafter (default: WORK_DIR/smoldraft)")
    parser.add_argument("--target", default="embedded", help="target model spec (default: embedded)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    for group, cls in (("data", DataSettings), ("training", TrainSettings)):
        g = parser.add_argument_group(group)
        for f in fields(cls):
            if f.name == "seed":
                continue
            flag, dest = f"--{f.name.replace('_', '-')}", f"{group}_{f.name}"
            if isinstance(f.default, bool):
                g.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, dest=dest)
            else:
                g.add_argument(flag, type=type(f.default), default=f.default, dest=dest,
                               choices=f.metadata.get("choices"), help=f"(default: {f.default})")
    parser.add_argument("--seed", type=int, default=0, help="seed for prompts, sampling, data order (default: 0)")
    parser.add_argument("--calibrate", type=Path, default=None, metavar="DIR",
                        help="only measure the drafter in DIR against its target and write DIR/calibration.json "
                             "(the k auto rule starts from it); a full run does this at its end")
    parser.add_argument("--calibration-prompts", type=int, default=PROMPTS,
                        help=f"prompts the calibration answers (default: {PROMPTS})")
    parser.add_argument("--calibration-tokens", type=int, default=MAX_NEW_TOKENS,
                        help=f"tokens of each calibration answer (default: {MAX_NEW_TOKENS})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--data" or a.startswith("--data=") for a in argv):
        from specchat.distill.grow import main as grow
        return grow(argv)
    args = build_parser().parse_args(argv)
    import torch

    from specchat.distill.pipeline import run

    if args.threads:
        torch.set_num_threads(args.threads)
    data = DataSettings(seed=args.seed, **{f.name: getattr(args, f"data_{f.name}")
                                           for f in fields(DataSettings) if f.name != "seed"})
    train = TrainSettings(seed=args.seed, **{f.name: getattr(args, f"training_{f.name}")
                                             for f in fields(TrainSettings) if f.name != "seed"})
    work = args.work_dir or _default_work_dir()
    out = args.out or work / "smoldraft"
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    from specchat.distill.calibrate import calibrate
    from specchat.engine.loop.host import EngineHost

    measure = lambda directory: calibrate(directory, args.target, args.calibration_prompts,  # noqa: E731
                                          args.calibration_tokens, log=log)

    host = EngineHost()  # every torch call on one thread, as in a chat (engine/loop/host.py)
    try:
        if args.calibrate is not None:
            host.call(measure, args.calibrate)
        else:
            host.call(lambda: run(work, out, data, train, target_spec=args.target, argv=argv, log=log))
            host.call(measure, out)  # how its drafts hold, for the k auto rule
    except ValueError as exc:  # settings that cannot run here, or a work dir made with others
        print(f"specchat distill: error: {exc}", file=sys.stderr)
        return 2
    finally:
        host.close()
    return 0
