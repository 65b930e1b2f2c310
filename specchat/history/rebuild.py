"""A stored conversation as the chat screen shows it: each turn from its round trace
when the file still holds it (provenance colours, rounds for the inspector), else
from the store's own text and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specchat.engine.loop.events import Totals, TurnEnd
from specchat.tui.persist import TraceError, load_transcript
from specchat.tui.transcript import Answer, Transcript

from .store import Conversation, HistoryStore, Turn

FINISH = {"complete": "eos", "length": "length", "stopped": "cancelled", "error": "error"}


@dataclass
class Rebuilt:
    conversation: Conversation
    transcript: Transcript
    trace: Path | None  # the trace file new turns go on appending to (None: start one)
    next_trace_index: int  # the next answer's place in it


def rebuild(store: HistoryStore, conversation_id: int) -> Rebuilt | None:
    conversation = store.conversation(conversation_id)
    if conversation is None:
        return None
    turns = store.turns(conversation_id)
    files: dict[str, Transcript | None] = {}
    transcript = Transcript(system_prompt=conversation.system_prompt)
    for turn in turns:
        traced = _traced(turn, files)
        transcript.answers.append(traced if traced is not None else stored_answer(turn))
    trace, index = None, 0
    last = turns[-1] if turns else None
    if last is not None and last.trace and files.get(last.trace) is not None and Path(last.trace).is_file():
        trace, index = Path(last.trace), len(files[last.trace].answers)
    return Rebuilt(conversation, transcript, trace, index)


def _traced(turn: Turn, files: dict[str, Transcript | None]) -> Answer | None:
    if not turn.trace or turn.trace_index is None:
        return None
    if turn.trace not in files:
        try:
            files[turn.trace] = load_transcript(Path(turn.trace))[0]
        except TraceError:  # gone or damaged: the store's text stands in
            files[turn.trace] = None
    held = files[turn.trace]
    if held is None or turn.trace_index >= len(held.answers):
        return None
    answer = held.answers[turn.trace_index]
    return answer if answer.user_text == turn.prompt else None


def stored_answer(turn: Turn) -> Answer:
    f = turn.figures
    answer = Answer(user_text=turn.prompt, saved_text=turn.answer)
    if turn.status == "interrupted":
        answer.interrupted = True
        return answer
    tokens = int(f.get("tokens") or 0)
    rate = f.get("tokens_per_s")
    totals = Totals(tokens=tokens, rounds=int(f.get("rounds") or 0),
                    elapsed_s=tokens / rate if rate else 0.0)
    answer.end = TurnEnd(turn=turn.seq, finish_reason=FINISH.get(turn.status, "eos"), text=turn.answer,
                         totals=totals, error=f.get("error"))
    return answer
