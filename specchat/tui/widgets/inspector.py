"""The round inspector: every round of one answer, and the tokens of the chosen round.

Drafted tokens appear in three visibly different states: accepted, the first
rejected one (where the target disagreed), and the discarded rest (drafted after
the rejection, never judged on their own). Alternatives (other candidates verified
in the same pass) follow the run, marked with their position: accepted, rejected
(the target chose otherwise there) or discarded (after the run broke earlier).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from specchat.engine.loop.events import AlternativeToken, Round

from ..render import safe
from ..transcript import Answer, draft_length


def verdicts(r: Round) -> list[str]:
    """accepted | rejected (the first one the target disagreed with) | discarded."""
    out = []
    rejected_seen = False
    for t in r.drafted:
        if t.accepted and not rejected_seen:
            out.append("accepted")
        elif not rejected_seen:
            out.append("rejected")
            rejected_seen = True
        else:
            out.append("discarded")
    return out


def alternative_verdict(r: Round, alt: AlternativeToken) -> str:
    """accepted | rejected (its position was judged: the target chose otherwise) |
    discarded (the run broke before its position)."""
    if alt.accepted:
        return "accepted"
    run = sum(1 for t in r.drafted if t.accepted)
    return "discarded" if alt.position > run else "rejected"


def fmt_ms(seconds: float) -> str:
    """Milliseconds, switching to seconds where ms would not fit the column."""
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 1000 else f"{seconds:.1f} s"


def verdict_style(verdict: str, colors: dict[str, str]) -> Style:
    if verdict == "accepted":
        return Style(color=colors["accepted"])
    if verdict == "rejected":
        return Style(color=colors["rejected"], bold=True, underline=True)
    return Style(color=colors["rejected"], dim=True, strike=True)


def token_label(text: str) -> str:
    """A token as a short visible label: quotes show leading/trailing spaces."""
    return repr(safe(text))[1:-1] if text.strip() != text or "\\" in repr(text) else safe(text)


def k_cell(r: Round, auto: bool) -> str:
    """The round's draft length (transcript.draft_length), and after a "+" the drafts
    the k auto rule made and left unverified, unsure of them."""
    shown = draft_length(r, auto)
    return f"{shown}+{r.unverified}" if r.unverified else str(shown)


def drafted_cell(r: Round, colors: dict[str, str]) -> Text:
    cell = Text(no_wrap=True, overflow="ellipsis")
    for t, verdict in zip(r.drafted, verdicts(r)):
        cell.append(token_label(t.text) or "∅", verdict_style(verdict, colors))
        cell.append("·", Style(dim=True))
    if r.alternatives:
        cell.append(" or ", Style(dim=True))
        for alt in r.alternatives:
            cell.append(f"{alt.position}:", Style(dim=True))
            cell.append(token_label(alt.text) or "∅", verdict_style(alternative_verdict(r, alt), colors))
            cell.append(" ", Style(dim=True))
    if not r.drafted:
        cell.append("(no draft)", Style(dim=True))
    return cell


def emitted_cell(r: Round, colors: dict[str, str]) -> Text:
    if r.emitted is None:
        return Text("(stopped)", Style(dim=True))
    cell = Text(token_label(r.emitted.text) or "∅", Style(color=colors[r.emitted.kind], bold=True))
    cell.append(f" {r.emitted.kind}", Style(dim=True))
    return cell


class Inspector(Vertical):
    """Rounds of the selected answer (↑/↓ to move), and the tokens of the
    highlighted round with the drafter's p and the target's q."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.answer: Answer | None = None
        self.answer_number = 0
        self.palette: dict[str, str] = {}
        self._shown_rounds = 0

    def compose(self) -> ComposeResult:
        yield Static(id="inspector-title")
        rounds = DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
        rounds.add_column("round")
        rounds.add_column("k")
        rounds.add_column("drafted: accepted·rejected·discarded", width=30)
        rounds.add_column("target token", width=16)
        rounds.add_column("draft ms", width=8)
        rounds.add_column("verify ms", width=9)
        yield rounds
        tokens = DataTable(id="round-tokens", cursor_type="row")
        tokens.add_columns("pos", "token", "id", "p (drafter)", "q (target)", "verdict")
        yield tokens

    def show(self, answer: Answer, number: int, colors: dict[str, str], round_index: int | None = None) -> None:
        """Show `answer` (the `number`th of the conversation); new rounds are
        appended, so a live answer can be followed without losing the cursor."""
        table = self.query_one("#rounds", DataTable)
        if answer is not self.answer or colors != self.palette:
            table.clear()
            self._shown_rounds = 0
        self.answer, self.answer_number, self.palette = answer, number, colors
        for r in answer.rounds[self._shown_rounds:]:
            table.add_row(
                str(r.index), k_cell(r, answer.auto), drafted_cell(r, colors), emitted_cell(r, colors),
                fmt_ms(r.draft_time_s), fmt_ms(r.verify_time_s),
            )
        self._shown_rounds = len(answer.rounds)
        title = Text(f"Inspector · answer {number} · {len(answer.rounds)} rounds", Style(bold=True))
        title.append("   ↑/↓ rounds · tab tokens · f2 close", Style(dim=True))
        self.query_one("#inspector-title", Static).update(title)
        if round_index is not None and 0 <= round_index < table.row_count:
            table.move_cursor(row=round_index)
        self.show_round(table.cursor_row if table.row_count else None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "rounds":
            self.show_round(event.cursor_row)

    def show_round(self, row: int | None) -> None:
        tokens = self.query_one("#round-tokens", DataTable)
        tokens.clear()
        if self.answer is None or row is None or row >= len(self.answer.rounds):
            return
        r = self.answer.rounds[row]
        c = self.palette
        for pos, (t, verdict) in enumerate(zip(r.drafted, verdicts(r))):
            tokens.add_row(
                str(pos), Text(token_label(t.text) or "∅", verdict_style(verdict, c)), str(t.token_id),
                f"{t.p:.3f}", f"{t.q:.3f}", Text(verdict, verdict_style(verdict, c)),
            )
        for alt in r.alternatives:
            verdict = alternative_verdict(r, alt)
            tokens.add_row(
                f"{alt.position} alt", Text(token_label(alt.text) or "∅", verdict_style(verdict, c)),
                str(alt.token_id), f"{alt.p:.3f}", f"{alt.q:.3f}", Text(verdict, verdict_style(verdict, c)),
            )
        if r.emitted is not None:
            e = r.emitted
            # Its place in the answer: after the accepted tokens (a correction stands
            # where the first rejected draft was), not after the whole drafted run.
            tokens.add_row(
                str(r.n_accepted), Text(token_label(e.text) or "∅", Style(color=c[e.kind], bold=True)),
                str(e.token_id), "", f"{e.q:.3f}", Text(e.kind, Style(color=c[e.kind])),
            )
        summary = f"draft {fmt_ms(r.draft_time_s)} · verify {fmt_ms(r.verify_time_s)} (ms)"
        tokens.border_subtitle = summary
        tokens.border_title = f"round {r.index}: {r.n_accepted}/{len(r.drafted)} accepted" + (
            f" · {len(r.alternatives)} alternatives" if r.alternatives else "") + (
            f" · {r.unverified} more drafted, not verified" if r.unverified else "")
