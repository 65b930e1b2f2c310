"""One-shot mode: one turn of the engine, streamed to stdout.

The answer goes to stdout as it is generated; everything else (stats, notices,
errors) goes to stderr. On a terminal the text is coloured by provenance and any
control sequence the model wrote is made visible instead of being obeyed; piped
output is the model's text unchanged, byte for byte.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO, Any, Iterator, Protocol

from specchat.engine.loop.events import Event, Notice, Round, TurnEnd, TurnStart, estimated_speedup, to_json

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# --- neutralising untrusted text for a terminal --------------------------------------

# C0 controls except tab and newline become their visible U+2400 pictures (so ESC,
# the start of every ANSI/OSC sequence, and CR, which overwrites lines, are shown,
# not obeyed); DEL and the C1 controls (8-bit CSI/OSC) likewise; bidi overrides,
# which reorder what the terminal displays, become U+FFFD.
_NEUTRAL = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_NEUTRAL[0x7F] = 0x2421
_NEUTRAL.update({c: 0xFFFD for c in range(0x80, 0xA0)})
_NEUTRAL.update({c: 0xFFFD for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def neutralize(text: str) -> str:
    """Text safe to write to a terminal: no control character reaches it."""
    return text.translate(_NEUTRAL)


# --- deciding on colour ------------------------------------------------------------


def use_color(choice: str, stream: IO[str], environ: dict[str, str] | None = None) -> bool:
    """--color always|never, or auto: a terminal without NO_COLOR (https://no-color.org)."""
    environ = os.environ if environ is None else environ
    if choice == "always":
        return True
    if choice == "never":
        return False
    return _isatty(stream) and not environ.get("NO_COLOR")


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- writing the answer --------------------------------------------------------------

# Named ANSI colours, so the terminal's own palette (light or dark) decides the shade.
STYLES = {
    "accepted": "green",
    "correction": "yellow",
    "bonus": "cyan",
    "target": "",
    "rejected": "red dim strike",
}


class AnswerWriter:
    """Writes each round's text as it arrives.

    Plain: the exact text, flushed per round. Coloured: Rich, one style per
    provenance; rejected drafts (with show_rejected) are struck through in place.
    """

    def __init__(self, out: IO[str], *, color: bool, sanitize: bool, show_rejected: bool) -> None:
        self.out = out
        self.sanitize = sanitize or color  # colour means a terminal is the reader
        self.show_rejected = show_rejected and color
        self.console = None
        if color:
            from rich.console import Console

            self.console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=True)
        self.wrote_any = False
        self.ends_with_newline = True

    def _clean(self, text: str) -> str:
        return neutralize(text) if self.sanitize else text

    def round(self, r: Round) -> None:
        pieces = _pieces(r, self.show_rejected)
        if self.console is None:
            text = self._clean("".join(t for t, kind in pieces if kind != "rejected"))
            if text:
                self.out.write(text)
                self.out.flush()
                self._wrote(text)
            return
        from rich.text import Text

        line = Text()
        for text, kind in pieces:
            shown = self._clean(text)
            if kind == "rejected":
                # A rejected newline never happened: mark it rather than break the line.
                shown = shown.replace("\n", "⏎")
            line.append(shown, STYLES[kind])  # append() never parses markup
        if line.plain:
            self.console.print(line, end="")
            self.out.flush()
            self._wrote(line.plain)

    def _wrote(self, text: str) -> None:
        self.wrote_any = True
        self.ends_with_newline = text.endswith("\n")

    def finish(self) -> None:
        # A terminal prompt should not start mid-line; piped text stays exact.
        if self.wrote_any and not self.ends_with_newline and (self.sanitize or self.console):
            self.out.write("\n")
        self.out.flush()


def _pieces(r: Round, show_rejected: bool) -> list[tuple[str, str]]:
    return [(text, kind) for text, kind, _ in r.shown(show_rejected)]


# --- summaries -----------------------------------------------------------------------


def _plain_step(start: TurnStart | None, end: TurnEnd) -> float | None:
    """The plain step as the session knew it at the turn's end (warm-up, then every
    plain round, this turn's too), else at its start."""
    return end.plain_step_s or (start.plain_step_s if start else None)


def _estimate(start: TurnStart | None, end: TurnEnd) -> float | None:
    """The turn's speedup estimate; none for a turn that never drafted by design
    (speculation off is the baseline itself), as on the chat screen."""
    if start is None or start.drafter == "none" or start.k == "0":
        return None
    return estimated_speedup(end.totals, _plain_step(start, end))


def result_json(start: TurnStart | None, end: TurnEnd) -> dict[str, Any]:
    totals = end.totals
    result: dict[str, Any] = {
        "text": end.text,
        "finish_reason": end.finish_reason,
        "target": start.target if start else None,
        "drafter": start.drafter if start else None,
        "device": start.device if start else None,
        "weights": start.weights if start else None,
        "kv_cache": (start.kv_cache or None) if start else None,
        "stats": {
            "tokens": totals.tokens,
            "rounds": totals.rounds,
            "drafted": totals.drafted,
            "accepted": totals.accepted,
            "acceptance_rate": totals.acceptance_rate,
            "mean_tokens_per_round": totals.mean_tokens_per_round,
            "tokens_per_s": totals.tokens_per_s,
            "alternatives": totals.alternatives,
            "alternatives_accepted": totals.alternatives_accepted,
            # README, "Speedup": tokens × plain step ÷ the rounds' time; null unmeasured.
            "speedup_estimate": _estimate(start, end),
            "plain_step_s": _plain_step(start, end),
        },
    }
    if end.error:
        result["error"] = end.error
    return result


def stats_line(start: TurnStart | None, end: TurnEnd) -> str:
    t = end.totals
    rate = "n/a (nothing drafted)" if t.acceptance_rate is None else f"{t.acceptance_rate:.0%}"
    parts = [
        f"{t.tokens} tokens",
        f"{t.tokens_per_s:.1f} tok/s",
        f"acceptance {rate}",
        f"{t.mean_tokens_per_round:.2f} tokens/round",
    ]
    if t.alternatives:
        parts.append(f"{t.alternatives_accepted}/{t.alternatives} alternatives accepted")
    estimate = _estimate(start, end)
    if estimate is not None:
        parts.append(f"speedup ≈{estimate:.2f}× (estimate: plain step {1000 * _plain_step(start, end):.1f} ms)")
    if start is not None:
        parts += [start.held_on(), f"target {start.target}", f"drafter {start.drafter}"]
    if end.finish_reason not in ("eos", "stop"):
        parts.append(f"finished: {end.finish_reason}")
    return " · ".join(parts)


# --- running one turn ------------------------------------------------------------------


class Session(Protocol):
    """A session on the engine thread (engine.host.HostedSession): send() returns
    the turn's events as an EventStream read here, while the engine runs there."""

    def send(self, user_text: str) -> Iterator[Event]: ...
    def cancel(self) -> None: ...


@dataclass
class Options:
    color: str = "auto"  # auto | always | never
    show_rejected: bool = False
    stats: bool = False
    json: bool = False
    trace: str | None = None  # path for the JSON-lines event stream


class EngineFailure(Exception):
    """The engine raised instead of ending the turn with an error event."""


def run_turn(session: Session, prompt: str, opts: Options, out: IO[str], err: IO[str]) -> int:
    """Stream one turn; returns the exit code. Raises EngineFailure for an engine crash."""
    writer = None
    if not opts.json:
        writer = AnswerWriter(
            out,
            color=use_color(opts.color, out),
            sanitize=_isatty(out),
            show_rejected=opts.show_rejected,
        )
    trace = open(opts.trace, "w", encoding="utf-8") if opts.trace else None
    start: TurnStart | None = None
    end: TurnEnd | None = None
    events = session.send(prompt)  # the engine runs on its own thread; the main one takes Ctrl+C
    interrupted = False
    try:
        while True:
            # Ctrl+C may land anywhere in this loop: the first asks the engine to stop
            # at the next round and keeps reading until it ends the turn; a second
            # stops waiting. Either way what was printed stays.
            try:
                try:
                    item = next(events, None)
                except Exception as exc:  # the engine raised (KeyboardInterrupt is not an Exception)
                    raise EngineFailure(str(exc) or type(exc).__name__) from exc
                if item is None:
                    break
                if trace:
                    trace.write(to_json(item) + "\n")
                    trace.flush()  # an interrupted run still leaves a readable trace
                if isinstance(item, TurnStart):
                    start = item
                elif isinstance(item, Notice):
                    err.write(f"specchat: note: {neutralize(item.message)}\n")
                elif isinstance(item, Round) and writer:
                    writer.round(item)
                elif isinstance(item, TurnEnd):
                    end = item
            except KeyboardInterrupt:
                if interrupted:
                    if writer:
                        writer.finish()
                    return EXIT_INTERRUPTED
                interrupted = True
                session.cancel()
    except BrokenPipeError:
        # The reader went away (`| head`): stop generating; nothing is wrong.
        session.cancel()
        raise
    finally:
        if trace:
            trace.close()
    if writer:
        writer.finish()
    if end is None:
        raise EngineFailure("the engine ended the turn without a final event")
    if opts.json:
        out.write(json.dumps(result_json(start, end), ensure_ascii=False) + "\n")
        out.flush()
    if opts.stats:
        err.write(stats_line(start, end) + "\n")
    if end.finish_reason == "error":
        err.write(f"specchat: error: {neutralize(end.error or 'generation failed')}\n")
        return EXIT_ERROR
    if end.finish_reason == "cancelled" or interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK
