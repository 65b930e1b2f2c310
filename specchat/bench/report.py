"""Benchmark results → figures per category and overall, as JSON and as a table.

How each figure is averaged (also written into the JSON's "settings"):

- tokens/s: total generated tokens ÷ total decoding time of the group's prompts
  (prefill excluded), so long answers weigh by their length;
- speedup: for each prompt, speculative tokens/s ÷ baseline tokens/s; the group's
  speedup is the geometric mean of those ratios, so every prompt counts once and a
  2× gain and a 2× loss cancel out;
- acceptance rate: accepted ÷ drafted tokens, over all drafted tokens (a position
  where an alternative was accepted in place of the draft counts as accepted);
- alternatives: candidates verified beside the drafted runs, and how many of
  them were accepted (greedy rounds only);
- unverified drafts: drafts the k auto rule made and then did not verify (it was
  unsure of them); not counted in the acceptance rate;
- mean tokens per round: tokens ÷ rounds, over all rounds;
- per-position acceptance: for draft position i, of the rounds that drafted a
  token at i, the share that accepted it;
- time of a round: decoding time ÷ rounds, and the drafting and verifying parts of
  it; beside it a plain step's (the baseline's decoding time ÷ its tokens). Where
  speculation does not pay, these say whether drafting or verifying costs too much.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from specchat.bench.measure import Measurement
from specchat.bench.runner import PromptResult

AVERAGING = {
    "tokens_per_s": "total generated tokens / total decoding time (prefill excluded), per group",
    "speedup": "geometric mean over prompts of (speculative tokens/s / baseline tokens/s)",
    "acceptance_rate": "accepted / drafted, over all drafted (and verified) tokens",
    "mean_tokens_per_round": "tokens / rounds, over all rounds",
    "per_position_acceptance": "for draft position i: rounds accepting the token at i / rounds drafting one",
    "alternatives": "candidates verified beside the drafted runs, and of those accepted, totals",
    "unverified_drafts": "drafts made and not verified (k auto), total; not in acceptance_rate",
    "round_ms": "decoding time / rounds (drafting and verifying parts likewise); baseline_step_ms: "
                "baseline decoding time / baseline tokens",
}


def geometric_mean(values: Iterable[float]) -> float | None:
    logs = [math.log(v) for v in values if v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def _rate(ms: list[Measurement]) -> float:
    elapsed = sum(m.elapsed_s for m in ms)
    return sum(m.tokens for m in ms) / elapsed if elapsed > 0 else 0.0


def _ratio(a: Measurement, b: Measurement) -> float:
    """a's tokens/s over b's; 0 when either has none (left out of the mean)."""
    return a.tokens_per_s / b.tokens_per_s if a.tokens_per_s > 0 and b.tokens_per_s > 0 else 0.0


def _positions(ms: list[Measurement]) -> list[float]:
    drafted: list[int] = []
    accepted: list[int] = []
    for m in ms:
        for i, (d, a) in enumerate(zip(m.position_drafted, m.position_accepted)):
            if i >= len(drafted):
                drafted.append(0)
                accepted.append(0)
            drafted[i] += d
            accepted[i] += a
    return [a / d for a, d in zip(accepted, drafted) if d]


def summarize(results: list[PromptResult], greedy: bool) -> dict[str, Any]:
    spec = [r.spec for r in results]
    drafted = sum(m.drafted for m in spec)
    rounds = sum(m.rounds for m in spec)
    out: dict[str, Any] = {
        "prompts": len(results),
        "rounds": rounds,
        "speedup": geometric_mean(_ratio(r.spec, r.baseline) for r in results),
        "baseline_tokens_per_s": _rate([r.baseline for r in results]),
        "spec_tokens_per_s": _rate(spec),
        "drafted": drafted,
        "acceptance_rate": sum(m.accepted for m in spec) / drafted if drafted else None,
        "mean_tokens_per_round": sum(m.tokens for m in spec) / rounds if rounds else 0.0,
        "per_position_acceptance": _positions(spec),
        "alternatives": sum(m.alternatives for m in spec),
        "alternatives_accepted": sum(m.alternatives_accepted for m in spec),
        "unverified_drafts": sum(m.unverified for m in spec),
        **_round_times(spec, [r.baseline for r in results]),
    }
    if greedy:  # lossless check: greedy speculation must reproduce the baseline's answers
        out["identical_answers"] = sum(r.spec.texts == r.baseline.texts for r in results)
    return out


def _round_times(spec: list[Measurement], baseline: list[Measurement]) -> dict[str, float | None]:
    rounds, tokens = sum(m.rounds for m in spec), sum(m.tokens for m in baseline)
    per_round = (lambda seconds: 1000 * seconds / rounds) if rounds else (lambda _seconds: None)
    return {
        "round_ms": per_round(sum(m.elapsed_s for m in spec)),
        "round_drafting_ms": per_round(sum(m.draft_s for m in spec)),
        "round_verifying_ms": per_round(sum(m.verify_s for m in spec)),
        "baseline_step_ms": 1000 * sum(m.elapsed_s for m in baseline) / tokens if tokens else None,
    }


def _by_category(results: list[PromptResult]) -> dict[str, list[PromptResult]]:
    groups: dict[str, list[PromptResult]] = {}
    for r in results:
        groups.setdefault(r.prompt.category, []).append(r)
    return groups


def summarize_peer(results: list[PromptResult], key: str, greedy: bool) -> dict[str, Any]:
    peer = [r.peers[key] for r in results]
    out: dict[str, Any] = {
        "tokens_per_s": _rate(peer),
        # against specchat's own baseline, and specchat's speculation against the peer
        "speedup_vs_baseline": geometric_mean(_ratio(r.peers[key], r.baseline) for r in results),
        "spec_speedup_over_peer": geometric_mean(_ratio(r.spec, r.peers[key]) for r in results),
    }
    if greedy:
        out["identical_answers"] = sum(r.peers[key].texts == r.baseline.texts for r in results)
    return out


def build_report(results: list[PromptResult], settings: dict[str, Any],
                 peer_labels: dict[str, str]) -> dict[str, Any]:
    greedy = settings.get("temperature", 0.0) <= 0
    groups = _by_category(results)
    peers = {}
    for key, label in peer_labels.items():
        peers[key] = {"label": label, **summarize_peer(results, key, greedy),
                      "categories": {c: summarize_peer(rs, key, greedy) for c, rs in groups.items()}}
    return {
        "overall": summarize(results, greedy),
        "categories": {c: summarize(rs, greedy) for c, rs in groups.items()},
        "peers": peers,
        "settings": {**settings, "averaging": AVERAGING},
    }


# --- the table -----------------------------------------------------------------------


def num(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _row(name: str, s: dict[str, Any]) -> list[str]:
    positions = " ".join(f"{p:.0%}" for p in s["per_position_acceptance"][:6])
    return [name, str(s["prompts"]), num(s["baseline_tokens_per_s"], ".1f"), num(s["spec_tokens_per_s"], ".1f"),
            num(s["speedup"], ".2f") + ("×" if s["speedup"] is not None else ""),
            num(s["acceptance_rate"], ".0%"), num(s["mean_tokens_per_round"], ".2f"), positions or "–"]


def table_console(file):
    """A console for the table: a terminal's own width, else wide enough for the table
    (rich assumes 80 columns for a file or pipe, which squeezes headers to "baseli…"
    and wraps the per-position column over several lines)."""
    from rich.console import Console

    return Console(file=file, width=None if file.isatty() else 132)


def render(report: dict[str, Any], console) -> None:
    from rich.table import Table

    st = report["settings"]
    table = Table(title=f"specchat bench · target {st['target']} · drafter {st['drafter']} · "
                        f"{st['device']} · k {st['k']}", title_justify="left")
    for col, justify in (("category", "left"), ("prompts", "right"), ("baseline tok/s", "right"),
                         ("specchat tok/s", "right"), ("speedup", "right"), ("acceptance", "right"),
                         ("tokens/round", "right"), ("per-position acceptance", "left")):
        table.add_column(col, justify=justify)
    for name, s in report["categories"].items():
        table.add_row(*_row(name, s))
    table.add_section()
    table.add_row(*_row("overall", report["overall"]), style="bold")
    console.print(table)

    if report["peers"]:
        peers = Table(title="peers on the same models and prompts", title_justify="left")
        for col in ("peer", "tok/s", "vs specchat baseline", "specchat speculation vs peer"):
            peers.add_column(col, justify="left" if col == "peer" else "right")
        for p in report["peers"].values():
            peers.add_row(p["label"], f"{p['tokens_per_s']:.1f}", num(p["speedup_vs_baseline"], ".2f") + "×",
                          num(p["spec_speedup_over_peer"], ".2f") + "×")
        console.print(peers)

    overall = report["overall"]
    if overall.get("alternatives"):
        console.print(f"alternatives verified beside the drafted runs: {overall['alternatives']}, "
                      f"accepted {overall['alternatives_accepted']} "
                      f"(in {overall['alternatives_accepted'] / max(overall['rounds'], 1):.0%} of rounds)")
    if overall.get("unverified_drafts"):
        console.print(f"drafts left unverified by the k auto rule (it was unsure of them): "
                      f"{overall['unverified_drafts']}, beside {overall['drafted']} verified")
    if overall["round_ms"] and overall["baseline_step_ms"]:
        rest = overall["round_ms"] - overall["round_drafting_ms"] - overall["round_verifying_ms"]
        console.print(f"a round took {overall['round_ms']:.1f} ms (drafting {overall['round_drafting_ms']:.1f}, "
                      f"verifying {overall['round_verifying_ms']:.1f}, the rest {rest:.1f}); "
                      f"a plain step {overall['baseline_step_ms']:.1f} ms")
    if "identical_answers" in overall:
        console.print(f"greedy answers identical to the baseline's: "
                      f"{overall['identical_answers']}/{overall['prompts']} prompts")
    console.print("speedup = geometric mean over prompts of (speculative tok/s ÷ baseline tok/s); "
                  "tok/s = tokens ÷ decoding time, prefill excluded", style="dim")
