"""The conversation as Markdown (`/export`), with each answer's speculation stats."""

from __future__ import annotations

from .transcript import Transcript


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines() or [""])


def to_markdown(transcript: Transcript) -> str:
    parts = ["# specchat conversation", ""]
    if transcript.system_prompt:
        parts += ["**System prompt**", "", _quote(transcript.system_prompt), ""]
    for n, a in enumerate(transcript.answers, 1):
        parts += [f"## Turn {n}", "", "**You**", "", _quote(a.user_text), "", "**specchat**", ""]
        parts += [a.text if a.text else "_(no answer)_", ""]
        t = a.totals
        stats = [f"{t.tokens} tokens", f"{t.rounds} rounds"]
        if t.acceptance_rate is not None:
            stats.append(f"acceptance {t.acceptance_rate * 100:.0f}%")
        if t.rounds:
            stats.append(f"{t.mean_tokens_per_round:.2f} tokens/round")
        if t.tokens_per_s:
            stats.append(f"{t.tokens_per_s:.1f} tokens/s")
        if a.start:
            stats.append(f"target {a.start.target}, drafter {a.start.drafter}, k {a.start.k}")
        if a.status not in ("complete",):
            stats.append(a.status)
        parts += [f"<sub>{' · '.join(stats)}</sub>", ""]
    return "\n".join(parts).rstrip() + "\n"
