"""`specchat bench` from resolved options to a printed report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from specchat.bench.prompts import BenchPrompt, builtin_prompts, load_prompts, select
from specchat.config import RunConfig

if TYPE_CHECKING:
    from specchat.engine.loop.session import GenerationSettings

# Benchmarks are greedy and shorter than chats unless asked otherwise; these settings
# come from the bench command line only, never from the chat's config file or env.
BENCH_DEFAULTS = {"temperature": 0.0, "max_new_tokens": 128}
COMMAND_LINE_ONLY = frozenset({"temperature", "top_p", "top_k", "repetition_penalty", "seed", "max_new_tokens",
                               "system"})


def _held(target) -> str:
    """How the target is held: its weights' format and its KV cache's."""
    from specchat.engine.model.forward import kv_cache_label

    return f"{target.precision}, KV {kv_cache_label(target.model)}"


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
        as_json: bool, out: IO[str] | None = None, err: IO[str] | None = None, open_session=None,
        first_turns: int = 0) -> None:
    """Bench the session `open_session(config, progress)` builds, with `settings`
    (made from `config`), on an engine thread as the chat runs; then the first turn
    of `first_turns` prompts per category in fresh processes (first_turn.py).
    `out`/`err` default to the streams of the moment (a default bound at import would
    keep a stream that has since been replaced and closed)."""
    out, err = out or sys.stdout, err or sys.stderr
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from specchat.bench.first_turn import render_first_turns, run_first_turns, summarize_first_turns
    from specchat.bench.peers import hf_peers
    from specchat.bench.report import build_report, render, table_console
    from specchat.bench.runner import run_bench, steps
    from specchat.bench.step_profile import profile_step
    from specchat.engine.loop.host import EngineHost
    from specchat.engine.model.forward import kv_cache_label

    cold = select(prompts, limit=first_turns) if first_turns else []
    err_console = Console(file=err)
    host = EngineHost()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
            task = progress.add_task("loading", total=None)
            say = lambda text: progress.update(task, description=text)  # noqa: E731
            session = host.start(lambda report: open_session(config, report), say).session
            target, drafter = session.target, session.drafter
            peer_list = hf_peers(drafter, config.k, target.model) if peers == "hf" else []
            progress.update(task, total=steps(prompts, peer_list) + 2 * len(cold), completed=0)
            advance = lambda label: progress.update(task, advance=1, description=label)  # noqa: E731
            results = host.call(lambda: run_bench(target, drafter, prompts, settings, peers=peer_list,
                                                  on_step=advance, costs=session.costs))
            step = host.call(lambda: profile_step(target))
            first = run_first_turns(config, cold, on_step=advance) if cold else []
    finally:
        host.close()
    costs = session.costs
    report = build_report(results, {
        "target": target.name, "drafter": drafter.name, "device": str(target.device),
        "precision": target.precision, "kv_cache": kv_cache_label(target.model),
        "k": config.k_label, "alternatives": config.alternatives_label,
        "temperature": config.temperature,
        "top_p": config.top_p, "top_k": config.top_k, "repetition_penalty": config.repetition_penalty,
        "seed": config.seed,
        "max_new_tokens": config.max_new_tokens, "prompts": source, "n_prompts": len(prompts),
        "order": "baseline and speculation alternate per prompt, after a warm-up",
        "baseline": "the same engine with speculation off (drafter none)",
        "warmup_plain_step_ms": 1000 * costs.plain_step_s if costs.plain_step_s else None,
        "warmup_verify_ms": {fed: 1000 * s for fed, s in costs.verify_s.items()},
    }, {p.key: p.label for p in peer_list})
    report["step_profile"] = step
    if first:
        report["first_turn"] = summarize_first_turns(first)
    if as_json:
        out.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        console = table_console(out)
        render(report, console)
        console.print(f"Where a plain step goes ({step['context_tokens']} tokens of context, weights "
                      f"{_held(target)}, {step['step_ms']:.1f} ms): weights {step['weights_ms']:.1f} ms · "
                      f"attention {step['attention_ms']:.1f} ms · the rest {step['rest_ms']:.1f} ms")
        if first:
            render_first_turns(report["first_turn"], console)
