"""Record the replay fixture for the TUI tests from the real engine.

    .venv/bin/python tests/tui/record_trace.py [OUT]   (default: tests/tui/traces/session.jsonl)

Embedded model in fp32, greedy. Three turns: speculation off (the speedup
baseline), the ngram drafter (mostly rejected: it guesses from the prompt), and
the target drafting for itself through the model-drafter path (every draft
accepted, bonus tokens), each on a cleared history so the tiny model answers each
prompt rather than repeating its first answer, so the trace holds target, accepted, rejected, correction and
bonus tokens. Timings are real, hence the file is recorded once and committed:
replaying it is what makes the snapshots deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from specchat.engine.drafters import NgramDrafter, NoDrafter
from specchat.engine.events import to_json
from specchat.engine.session import ChatSession, GenerationSettings
from specchat.models import load_drafter, load_target

TURNS = [
    ("none", "Name the three primary colours, one per line."),
    ("ngram", "Copy this line twice: red, yellow and blue are the primary colours."),
    ("model", "Say [bold red]hello[/bold red] and write a two-item Markdown list of colours."),
]


def record(out: Path) -> None:
    torch.manual_seed(0)
    target = load_target("embedded", device="cpu", dtype=torch.float32)
    drafters = {"none": NoDrafter(), "ngram": NgramDrafter(), "model": load_drafter(target.spec, target)}
    session = ChatSession(target, NoDrafter(), settings=GenerationSettings(k=4, temperature=0.0, max_new_tokens=48))
    lines = []
    for kind, prompt in TURNS:
        session.clear()
        session.set_drafter(drafters[kind])
        session.settings.k = 0 if kind == "none" else 4
        lines += [to_json(event) for event in session.send(prompt)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} events to {out}")


if __name__ == "__main__":
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "traces" / "session.jsonl")
