"""Measure a trained drafter with the benchmark's own runner and report.

Until the drafter has a name in `specchat.models.load_drafter`, this is how its
figures are taken: `python -m specchat.distill.measure DIR --k 4` (same prompts,
same alternating baseline, same summary as `specchat bench`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specchat.distill.measure")
    parser.add_argument("weights", type=Path, nargs="?", default=None, help="drafter dir (default: shipped)")
    parser.add_argument("--k", default="4", help="draft length, or auto")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--categories", default="", help="comma-separated subset of categories")
    parser.add_argument("--limit", type=int, default=None, help="at most N prompts per category")
    args = parser.parse_args(argv)
    import torch

    from specchat.bench.prompts import builtin_prompts, select
    from specchat.bench.report import build_report
    from specchat.bench.runner import run_bench
    from specchat.engine.drafters.loading import load_trained_drafter
    from specchat.engine.loop.session import GenerationSettings
    from specchat.models import load_target, trained_drafter_quant

    if args.threads:
        torch.set_num_threads(args.threads)
    target = load_target("embedded", device="cpu")
    # Loaded as `specchat bench` would load the shipped drafter (fp16-packed on most CPUs).
    drafter = load_trained_drafter(target, args.weights, quant=trained_drafter_quant(None, target.device))
    prompts = select(builtin_prompts(), categories=args.categories.split(",") if args.categories else None,
                     limit=args.limit)
    k = None if args.k == "auto" else int(args.k)
    settings = GenerationSettings(k=k, temperature=0.0, max_new_tokens=args.max_new_tokens)
    results = run_bench(target, drafter, prompts, settings,
                        on_step=lambda label: print(label, file=sys.stderr, flush=True))
    report = build_report(results, {"target": target.name, "drafter": drafter.name, "device": "cpu",
                                    "precision": target.precision, "k": args.k, "temperature": 0.0,
                                    "max_new_tokens": args.max_new_tokens,
                                    "threads": torch.get_num_threads()}, {})
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
