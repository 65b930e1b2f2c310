"""A stored conversation as Markdown (`specchat history show`), and as a plain dict (`--json`)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from .store import Conversation, Turn


def when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines() or [""])


def figures_line(turn: Turn) -> str:
    f = turn.figures
    parts = []
    if f.get("tokens") is not None:
        parts.append(f"{f['tokens']} tokens")
    if f.get("tokens_per_s"):
        parts.append(f"{f['tokens_per_s']:.1f} tokens/s")
    if f.get("acceptance") is not None:
        parts.append(f"acceptance {f['acceptance'] * 100:.0f}%")
    if f.get("tokens_per_round"):
        parts.append(f"{f['tokens_per_round']:.2f} tokens/round")
    if f.get("speedup") is not None:
        parts.append(f"speedup {'≈' if f.get('speedup_kind') == 'estimate' else ''}{f['speedup']:.2f}× "
                     f"({f.get('speedup_kind')})")
    if f.get("target"):
        held = " ".join(x for x in (f.get("device"), f.get("weights")) if x)
        parts.append(f"target {f['target']}, drafter {f.get('drafter')}, k {f.get('k')}"
                     + (f", {held}" if held else ""))
    if turn.status != "complete":
        parts.append(turn.status + (f": {f['error']}" if f.get("error") else ""))
    return " · ".join(parts)


def to_markdown(conversation: Conversation, turns: list[Turn]) -> str:
    parts = [f"# {conversation.title or 'specchat conversation'}", "",
             f"<sub>conversation {conversation.id} · {when(conversation.created)} · {conversation.source}</sub>", ""]
    if conversation.system_prompt:
        parts += ["**System prompt**", "", _quote(conversation.system_prompt), ""]
    for turn in turns:
        parts += [f"## Turn {turn.seq}", "", "**You**", "", _quote(turn.prompt), "", "**specchat**", ""]
        parts += [turn.answer if turn.answer else "_(no answer)_", ""]
        line = figures_line(turn)
        if line:
            parts += [f"<sub>{line}</sub>", ""]
    return "\n".join(parts).rstrip() + "\n"


def to_dict(conversation: Conversation, turns: list[Turn] | None = None) -> dict[str, Any]:
    data = asdict(conversation)
    if not data["snippet"]:
        del data["snippet"]
    if turns is not None:
        data["messages"] = [{"turn": t.seq, "created": t.created, "prompt": t.prompt, "answer": t.answer,
                             "status": t.status, "trace": t.trace, **t.figures} for t in turns]
    return data
