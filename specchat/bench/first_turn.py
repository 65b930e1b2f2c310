"""First turns in fresh processes: the user's path, cold start included.

The warm figures (runner.py) measure every prompt after the process has warmed up.
A user's one-shot run is a fresh process: it loads, warms up, answers one prompt
and exits. So for some prompts the bench also runs exactly that, `specchat run
--json` in a new process with the prompt's first turn on stdin, once with
speculation off (`--drafter none`) and once with the bench's drafter, alternating
which goes first. Every setting is passed on the command line and the user's config
file and SPECCHAT_* variables are kept out, so both sides run what the bench runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

from specchat.bench.prompts import BenchPrompt
from specchat.config import RunConfig

_KEEP_ENV = {"SPECCHAT_CACHE_DIR"}  # the converted embedded model lives there


class FirstTurnError(Exception):
    """A fresh process that failed; one line naming the prompt."""


@dataclass
class FirstTurn:
    tokens: int
    tokens_per_s: float  # decoding only, prefill excluded, as the warm figures
    speedup_estimate: float | None  # the process's own estimate (README, Speedup)
    wall_s: float  # the whole process: start, load, warm-up, prefill, answer
    text: str = ""


@dataclass
class FirstTurnResult:
    prompt: BenchPrompt
    baseline: FirstTurn
    spec: FirstTurn


def command_line(config: RunConfig, drafter: str) -> list[str]:
    args = [sys.executable, "-m", "specchat", "run", "--json", "--color", "never", "--no-log",
            "--target", config.target, "--drafter", drafter, "--k", config.k_label,
            "--alternatives", config.alternatives_label, "--temperature", repr(config.temperature),
            "--top-p", repr(config.top_p), "--top-k", str(config.top_k),
            "--repetition-penalty", repr(config.repetition_penalty),
            "--max-new-tokens", str(config.max_new_tokens), "--device", config.device]
    if config.quant is not None:
        args += ["--quant", config.quant]
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    return args


def run_process(config: RunConfig, drafter: str, prompt: BenchPrompt, timeout_s: float = 600) -> FirstTurn:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECCHAT_") or k in _KEEP_ENV}
    env["SPECCHAT_CONFIG"] = os.devnull  # an empty config file: the bench's settings only
    started = time.perf_counter()
    done = subprocess.run(command_line(config, drafter), input=prompt.turns[0].encode("utf-8"),
                          capture_output=True, timeout=timeout_s, env=env)
    wall = time.perf_counter() - started
    label = prompt.id or prompt.category
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FirstTurnError(f"prompt {label}: a fresh `specchat run` with drafter {drafter} exited "
                             f"{done.returncode}: {lines[-1] if lines else 'no message'}")
    result = json.loads(done.stdout.decode("utf-8"))
    stats = result["stats"]
    return FirstTurn(tokens=stats["tokens"], tokens_per_s=stats["tokens_per_s"],
                     speedup_estimate=stats.get("speedup_estimate"), wall_s=wall, text=result["text"])


def run_first_turns(config: RunConfig, prompts: list[BenchPrompt],
                    on_step: Callable[[str], None] = lambda _label: None) -> list[FirstTurnResult]:
    results = []
    for i, prompt in enumerate(prompts):
        order = [("baseline", "none"), ("spec", config.drafter)]
        if i % 2:
            order.reverse()
        runs = {}
        for side, drafter in order:
            runs[side] = run_process(config, drafter, prompt)
            on_step(f"{prompt.id or prompt.category} (fresh process)")
        results.append(FirstTurnResult(prompt, runs["baseline"], runs["spec"]))
    return results


# --- figures -------------------------------------------------------------------------


def _group(results: list[FirstTurnResult]) -> dict:
    from specchat.bench.report import geometric_mean

    def rate(turns: list[FirstTurn]) -> float:
        seconds = sum(t.tokens / t.tokens_per_s for t in turns if t.tokens_per_s > 0)
        return sum(t.tokens for t in turns) / seconds if seconds > 0 else 0.0

    return {
        "prompts": len(results),
        "baseline_tokens_per_s": rate([r.baseline for r in results]),
        "spec_tokens_per_s": rate([r.spec for r in results]),
        "speedup": geometric_mean(r.spec.tokens_per_s / r.baseline.tokens_per_s for r in results
                                  if r.baseline.tokens_per_s > 0),
        "speedup_estimate": geometric_mean(r.spec.speedup_estimate for r in results if r.spec.speedup_estimate),
        "process_s": sum(r.baseline.wall_s + r.spec.wall_s for r in results) / (2 * len(results)),
        "identical_answers": sum(r.spec.text == r.baseline.text for r in results),
    }


def summarize_first_turns(results: list[FirstTurnResult]) -> dict:
    groups: dict[str, list[FirstTurnResult]] = {}
    for r in results:
        groups.setdefault(r.prompt.category, []).append(r)
    return {"overall": _group(results), "categories": {c: _group(rs) for c, rs in groups.items()}}


def render_first_turns(summary: dict, console) -> None:
    from rich.table import Table

    from specchat.bench.report import num

    table = Table(title="first turn in a fresh process (`specchat run --json`: start, load and warm-up included)",
                  title_justify="left")
    for col in ("category", "prompts", "baseline tok/s", "specchat tok/s", "speedup", "its estimate",
                "process s"):
        table.add_column(col, justify="left" if col == "category" else "right")

    def row(name: str, s: dict) -> list[str]:
        times = lambda x: num(x, ".2f") + ("×" if x is not None else "")  # noqa: E731
        return [name, str(s["prompts"]), f"{s['baseline_tokens_per_s']:.1f}", f"{s['spec_tokens_per_s']:.1f}",
                times(s["speedup"]), times(s["speedup_estimate"]), f"{s['process_s']:.1f}"]

    for name, s in summary["categories"].items():
        table.add_row(*row(name, s))
    table.add_section()
    table.add_row(*row("overall", summary["overall"]), style="bold")
    console.print(table)
