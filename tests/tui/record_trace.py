"""Record the replay fixtures for the TUI tests from the real engine.

    .venv/bin/python tests/tui/record_trace.py [session|alternatives|auto|readme] [OUT]
    (default: session, written to tests/tui/traces/<name>.jsonl)

readme: the user's default path (the CLI's session: target in this machine's default
format, smoldraft, k auto, warmed up) answering from a document, so the picture in
the README shows the speedup estimate of a first answer. Its snapshot
(test_snapshots.py::test_readme_screen) is copied to docs/chat-screen.svg:

    cp tests/tui/__snapshots__/test_snapshots/test_readme_screen.svg docs/chat-screen.svg

alternatives: one turn with the shipped drafter, k = 2 and 3 alternatives a round
(greedy, fp32 target), so the trace holds accepted and rejected alternatives.

auto: one turn with the shipped drafter and k auto (greedy, fp32 target), so the
trace holds rounds whose drafts the adaptive rule left partly unverified.

session:
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

from specchat.engine.drafters.ngram import NgramDrafter
from specchat.engine.drafters.protocol import NoDrafter
from specchat.engine.loop.events import to_json
from specchat.engine.loop.session import ChatSession, GenerationSettings
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


def record_alternatives(out: Path) -> None:
    target = load_target("embedded", device="cpu", quant="none", dtype=torch.float32)
    session = ChatSession(target, load_drafter("smoldraft", target, quant="none"),
                          settings=GenerationSettings(k=2, alternatives=3, temperature=0.0, max_new_tokens=48))
    lines = [to_json(event) for event in session.send("Explain in two sentences why the sky is blue.")]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} events to {out}")


def record_auto(out: Path) -> None:
    target = load_target("embedded", device="cpu", quant="none", dtype=torch.float32)
    session = ChatSession(target, load_drafter("smoldraft", target, quant="none"),
                          settings=GenerationSettings(k=None, temperature=0.0, max_new_tokens=64))
    prompt = "Give three tips for learning a new language, one line each."
    lines = [to_json(event) for event in session.send(prompt)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} events to {out}")


README_PROMPT = (
    "Answer using only this text. The lighthouse on Karrow Point was built in 1871 from granite "
    "quarried on the island itself. Its first lamp burned whale oil and could be seen for eleven "
    "nautical miles. In 1952 the light was electrified. Question: what was the lighthouse built from, "
    "and when was it electrified?")


def record_readme(out: Path) -> None:
    from specchat.cli import _open_session
    from specchat.config import resolve

    session = _open_session(resolve({"max_new_tokens": 64}), lambda message: None)
    lines = [to_json(event) for event in session.send(README_PROMPT)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} events to {out}")


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else "session"
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / "traces" / f"{name}.jsonl"
    {"session": record, "alternatives": record_alternatives, "auto": record_auto, "readme": record_readme}[name](path)
