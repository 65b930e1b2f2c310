"""The always-visible gauges panel and the provenance legend."""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from ..stats import GaugeValues

_SPARK = "▁▂▃▄▅▆▇█"
_BAR_WIDTH = 12


@dataclass
class RunInfo:
    """Names shown at the top of the panel; from the session or the trace's TurnStart."""

    target: str = "—"
    drafter: str = "—"
    device: str = "—"
    memory: str = "—"
    mode: str = "live"  # "live" | "replay"
    speculation: bool = True


def percent(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.0f}%"


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _SPARK[0] * len(values)
    return "".join(_SPARK[min(len(_SPARK) - 1, int(v / top * (len(_SPARK) - 1) + 0.5))] for v in values)


def histogram_lines(hist: dict[int, int], max_k: int) -> list[tuple[str, str, str]]:
    """(bin label, bar, count) per accepted length 0..max_k."""
    top = max(hist.values(), default=0)
    rows = []
    for n in range(0, max(max_k, max(hist, default=0)) + 1):
        count = hist.get(n, 0)
        width = round(count / top * _BAR_WIDTH) if top else 0
        if count and not width:
            width = 1  # a bin with rounds is never drawn empty
        rows.append((f"{n:>2}", "█" * width, str(count)))
    return rows


def render_gauges(values: GaugeValues, info: RunInfo, colors: dict[str, str]) -> Text:
    label = Style(dim=True)
    head = Style(bold=True)
    out = Text(no_wrap=True, overflow="ellipsis")

    def row(name: str, value: str, style: Style | None = None) -> None:
        out.append(f"{name:<9}", label)
        out.append(value + "\n", style or Style())

    row("target", info.target)
    row("drafter", info.drafter if info.speculation else f"off ({info.drafter})")
    row("device", info.device)
    row("memory", info.memory)
    k_now = "—" if values.current_k is None else str(values.current_k)
    k_set = "" if values.k_setting is None else " (auto)" if values.k_setting == "auto" else " (fixed)"
    row("k", k_now + k_set)
    out.append("\nacceptance", head)
    out.append("  accepted/drafted\n", label)
    row(" turn", percent(values.turn.acceptance_rate), Style(color=colors["accepted"], bold=True))
    row(" session", percent(values.session.acceptance_rate), Style(color=colors["accepted"]))
    if values.session.alternatives:  # only where alternatives were verified (greedy rounds)
        row(" alts", f"{values.session.alternatives_accepted}/{values.session.alternatives} taken",
            Style(color=colors["accepted"]))
    out.append("\ntokens/round", head)
    out.append("  mean over rounds\n", label)
    row(" turn", f"{values.turn.mean_tokens_per_round:.2f}" if values.turn.rounds else "—")
    row(" session", f"{values.session.mean_tokens_per_round:.2f}" if values.session.rounds else "—")
    out.append(" accepted drafts per round\n", label)
    for n, bar, count in histogram_lines(values.histogram, values.max_k):
        out.append(f" {n} ", label)
        out.append(f"{bar:<{_BAR_WIDTH}}", Style(color=colors["accepted"]))
        out.append(f" {count}\n", label)
    out.append("\ntokens/s", head)
    tps = values.turn.tokens_per_s
    out.append(f"  {tps:.1f} this turn\n" if values.turn.tokens else "  —\n")
    out.append(" " + sparkline(values.round_rates) + "\n", Style(color=colors["bonus"]))
    out.append("\nspeedup", head)
    if values.baseline is not None:
        value = "—" if values.speedup is None else f"{values.speedup:.2f}×"
        out.append(f"  {value}", Style(bold=True))
        out.append(" measured\n", label)
        out.append(
            f" vs turn {values.baseline.answer_index + 1} (spec off,\n"
            f" {1000 * values.baseline.s_per_token:.0f} ms/token)\n",
            label,
        )
    elif values.plain_step_s:
        value = "—" if values.estimate is None else f"≈{values.estimate:.2f}×"
        out.append(f"  {value}", Style(bold=True))
        out.append(" estimate\n", label)
        out.append(f" vs a plain step of\n {1000 * values.plain_step_s:.1f} ms"
                   f" (/spec off measures)\n", label)
    else:
        out.append("  no baseline yet\n", Style(color=colors["correction"]))
        out.append(" (send a turn with /spec off)\n", label)
    out.rstrip()
    return out


class Gauges(Static):
    def show(self, values: GaugeValues, info: RunInfo, colors: dict[str, str]) -> None:
        self.values = values
        self.update(render_gauges(values, info, colors))
