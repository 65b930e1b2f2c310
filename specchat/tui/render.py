"""Answers → Rich `Text` coloured by token provenance.

Model and user text only ever enter a `Text` through `append(str, style)`, which
never parses markup, and after `safe()`, which makes terminal control characters
visible instead of letting them reach the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text

from specchat.engine.loop.events import Round

from .transcript import Answer

# C0/C1 controls (except newline and tab) → visible stand-ins (U+2400 block, or U+FFFD).
_CONTROL_MAP = {c: 0x2400 + c for c in range(0x20) if c not in (9, 10)}
_CONTROL_MAP[0x7F] = 0x2421
_CONTROL_MAP.update({c: 0xFFFD for c in range(0x80, 0xA0)})


def safe(text: str) -> str:
    return text.translate(_CONTROL_MAP)


@dataclass(frozen=True)
class Piece:
    """One token as shown: its text, provenance, and where it came from."""

    text: str
    kind: str  # accepted | correction | bonus | target | rejected
    round_index: int
    position: int  # index within the round: drafted position, or the emitted token's place (n_accepted)


def pieces(answer: Answer, show_rejected: bool) -> list[Piece]:
    """The answer's tokens in order. Rejected drafts (the first rejected and the
    discarded rest) sit where they were rejected, before the correction."""
    out: list[Piece] = []
    for r in answer.rounds:
        out.extend(round_pieces(r, show_rejected))
    if not answer.rounds and answer.text:  # kept without its rounds (history store): one plain piece
        out.append(Piece(answer.text, "target", -1, 0))
    return out


def round_pieces(r: Round, show_rejected: bool) -> list[Piece]:
    return [Piece(text, kind, r.index, position) for text, kind, position in r.shown(show_rejected)]


def piece_style(kind: str, colors: dict[str, str]) -> Style:
    if kind == "rejected":
        return Style(color=colors["rejected"], dim=True, strike=True)
    return Style(color=colors[kind])


def visible(piece: Piece) -> str:
    text = safe(piece.text)
    if piece.kind == "rejected":
        # A rejected newline would break the line it never produced: show it as a mark.
        return text.replace("\n", "⏎") or "∅"
    return text


def answer_text(items: list[Piece], colors: dict[str, str], cursor: int | None = None,
                streaming: bool = False) -> Text:
    """The answer as coloured text; each token's style carries its index (for clicks),
    except while `streaming`: then a run of tokens of one kind is one span, which
    Textual renders several times faster (unique styles defeat its caches)."""
    if streaming and cursor is None:
        return _runs_text(items, colors)
    text = Text()
    for i, piece in enumerate(items):
        # The token index rides in the style's meta so a click can find its token.
        style = piece_style(piece.kind, colors) + Style(meta={"token": i})
        shown = visible(piece)
        if i == cursor:
            style += Style(reverse=True, bold=True)
            # Keep the cursor visible on whitespace-only tokens.
            if not shown.strip():
                shown = shown.replace("\n", "⏎\n") if "\n" in shown else (shown or "∅")
        text.append(shown, style)
    return text


def _runs_text(items: list[Piece], colors: dict[str, str]) -> Text:
    text = Text()
    run: list[str] = []
    kind = None
    for piece in items + [Piece("", "", -1, -1)]:  # a sentinel ends the last run
        if piece.kind != kind and run:
            text.append("".join(run), piece_style(kind, colors))
            run = []
        kind = piece.kind
        run.append(visible(piece))
    return text


def legend(colors: dict[str, str]) -> Text:
    text = Text()
    for kind, label in (
        ("accepted", "accepted draft"),
        ("correction", "correction"),
        ("bonus", "bonus"),
        ("target", "target"),
        ("rejected", "rejected draft"),
    ):
        text.append("■ ", Style(color=colors[kind]))
        text.append(label, piece_style(kind, colors) if kind == "rejected" else Style(color=colors[kind]))
        text.append("  ")
    text.rstrip()
    return text
