"""`specchat bench` from resolved options to a printed report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from specchat.bench.prompts import BenchPrompt, builtin_prompts, load_prompts, select
from specchat.config import RunConfig

if TYPE_CHECKING:
    from specchat.engine.session import GenerationSettings

# Benchmarks are greedy and shorter than chats unless asked otherwise; these settings
# come from the bench command line only, never from the chat's config file or env.
BENCH_DEFAULTS = {"temperature": 0.0, "max_new_tokens": 128}
COMMAND_LINE_ONLY = frozenset({"temperature", "top_p", "top_k", "repetition_penalty", "seed", "max_new_tokens",
                               "system"})


def choose_prompts(prompts_file: Path | None, categories: list[str] | None,
                   limit: int | None) -> tuple[list[BenchPrompt], str]:
    """(prompts, where they came from); PromptFileError / ValueError for bad choices."""
    prompts = load_prompts(prompts_file) if prompts_file else builtin_prompts()
    known = sorted({p.category for p in prompts})
    unknown = [c for c in categories or [] if c not in known]
    if unknown:
        raise ValueError(f"unknown category {unknown[0]!r} (known: {', '.join(known)})")
    chosen = select(prompts, categories=categories, limit=limit)
    if not chosen:
        raise ValueError("no prompts selected")
    return chosen, str(prompts_file) if prompts_file else "built-in"


def run(config: RunConfig, settings: GenerationSettings, prompts: list[BenchPrompt], source: str, *, peers: str,
        as_json: bool, out: IO[str] | None = None, err: IO[str] | None = None, load=None) -> None:
    """Bench the models `load(config)` gives with `settings` (made from `config`).
    `out`/`err` default to the streams of the moment (a default bound at import would
    keep a stream that has since been replaced and closed)."""
    out, err = out or sys.stdout, err or sys.stderr
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from specchat.bench.peers import hf_peers
    from specchat.bench.report import build_report, render, table_console
    from specchat.bench.runner import run_bench, steps

    target, drafter = load(config)
    peer_list = hf_peers(drafter, config.k, target.model) if peers == "hf" else []
    err_console = Console(file=err)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task("warm-up", total=steps(prompts, peer_list))
        results = run_bench(target, drafter, prompts, settings, peers=peer_list,
                            on_step=lambda label: progress.update(task, advance=1, description=label))
    report = build_report(results, {
        "target": target.name, "drafter": drafter.name, "device": str(target.device),
        "precision": target.precision, "k": config.k_label, "alternatives": config.alternatives_label,
        "temperature": config.temperature,
        "top_p": config.top_p, "top_k": config.top_k, "repetition_penalty": config.repetition_penalty,
        "seed": config.seed,
        "max_new_tokens": config.max_new_tokens, "prompts": source, "n_prompts": len(prompts),
        "order": "baseline and speculation alternate per prompt, after a warm-up",
        "baseline": "the same engine with speculation off (drafter none)",
    }, {p.key: p.label for p in peer_list})
    if as_json:
        out.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        render(report, table_console(out))
