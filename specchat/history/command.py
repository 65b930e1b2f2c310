"""`specchat history`: list, search, show, export and delete stored conversations.

    specchat history                 the 20 most recent (id, date, turns, title, models)
    specchat history -q WORDS        conversations with a message holding every word
    specchat history show ID         one as Markdown (ID: a number or `last`)
    specchat history export ID [-o FILE]   to a file (Markdown, or JSON with --json)
    specchat history delete ID [--yes]
    --json on each: one JSON value on stdout, for scripts.

Errors are one line on stderr: 1 for a database that cannot be used, 2 for bad usage.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from .store import Conversation, HistoryError, HistoryStore

EXIT_ERROR, EXIT_USAGE = 1, 2

history_app = typer.Typer(help="Stored conversations and one-shot answers: list, search, show, export, delete.",
                          no_args_is_help=False, add_completion=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON value (for scripts).")]
IdArg = Annotated[str, typer.Argument(help="A conversation's id (see `specchat history`), or `last`.",
                                      show_default=False, metavar="ID")]


def _fail(message: str, code: int) -> typer.Exit:
    print(f"specchat: error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


@contextmanager
def _store(data_dir: Path | None = None) -> Iterator[HistoryStore]:
    from .opening import open_history

    try:
        store, report = open_history(data_dir)
    except HistoryError as exc:
        raise _fail(str(exc), EXIT_ERROR) from None
    for problem in report.unreadable:
        print(f"specchat: warning: not imported: {problem}", file=sys.stderr)
    try:
        yield store
    except HistoryError as exc:
        raise _fail(str(exc), EXIT_ERROR) from None
    finally:
        store.close()


def parse_id(text: str) -> int | None:
    """A conversation id as typed: a whole number, or `last` (None)."""
    if text.strip().lower() == "last":
        return None
    if not text.strip().isdigit():
        raise _fail(f"{text!r} is not a conversation id (a number from `specchat history`, or last)", EXIT_USAGE)
    return int(text)


def find(store: HistoryStore, text: str) -> Conversation:
    wanted = parse_id(text)
    found = store.latest() if wanted is None else store.conversation(wanted)
    if found is None:
        raise _fail("no conversations stored yet" if wanted is None
                    else f"no conversation {wanted} (see `specchat history`)", EXIT_ERROR)
    return found


def _listing(found: list[Conversation]) -> str:
    from .markdown import when

    lines = [f"{'ID':>5}  {'DATE':16}  {'TURNS':>5}  {'TITLE':40}  MODELS"]
    for c in found:
        lines.append(f"{c.id:>5}  {when(c.updated):16}  {c.turns:>5}  {c.title[:40]:40}  {c.models}".rstrip())
        if c.snippet:
            lines.append(f"{'':>7}{c.snippet}")
    return "\n".join(lines)


@history_app.callback(invoke_without_command=True)
def history(
    ctx: typer.Context,
    query: Annotated[Optional[str], typer.Option("-q", "--query", help="Only conversations with a message "
                                                 "holding every one of these words.", metavar="WORDS")] = None,
    limit: Annotated[int, typer.Option("-n", "--limit", min=1, help="At most this many.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """List recent conversations, or search them (-q)."""
    if ctx.invoked_subcommand is not None:
        return
    with _store() as store:
        found = store.search(query, limit) if query and query.strip() else store.conversations(limit)
    if json_:
        from .markdown import to_dict

        print(json.dumps([to_dict(c) for c in found], ensure_ascii=False))
    elif found:
        print(_listing(found))
    else:
        print("no conversation matches" if query else "no conversations stored yet", file=sys.stderr)


@history_app.command()
def show(conversation: IdArg, json_: JsonOpt = False) -> None:
    """Print a conversation as Markdown."""
    from .markdown import to_dict, to_markdown

    with _store() as store:
        found = find(store, conversation)
        turns = store.turns(found.id)
    if json_:
        print(json.dumps(to_dict(found, turns), ensure_ascii=False))
    else:
        sys.stdout.write(to_markdown(found, turns))


@history_app.command()
def export(
    conversation: IdArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", metavar="FILE", dir_okay=False,
                                                   help="Where to write (default: exports/ in the data directory).")]
    = None,
    json_: Annotated[bool, typer.Option("--json", help="Write JSON instead of Markdown.")] = False,
) -> None:
    """Write a conversation to a file; prints the file's path."""
    from specchat.tui.persist import data_dir

    from .markdown import to_dict, to_markdown

    with _store() as store:
        found = find(store, conversation)
        turns = store.turns(found.id)
    text = json.dumps(to_dict(found, turns), ensure_ascii=False, indent=1) + "\n" if json_ else to_markdown(found, turns)
    path = output or data_dir() / "exports" / f"conversation-{found.id}.{'json' if json_ else 'md'}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}", EXIT_ERROR) from None
    print(path)


@history_app.command()
def delete(
    conversation: IdArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Delete a conversation, and its round traces in the data directory."""
    from specchat.tui.persist import conversations_dir

    with _store() as store:
        found = find(store, conversation)
        if not yes:
            if not sys.stdin.isatty():
                raise _fail("delete asks first: add --yes when not on a terminal", EXIT_USAGE)
            if not typer.confirm(f"delete conversation {found.id} ({found.title!r}, {found.turns} turns)?"):
                raise typer.Exit(EXIT_ERROR)
        freed = store.delete(found.id)
    folder = conversations_dir().resolve()
    removed = []
    for trace in freed:  # traces the chat wrote; a file a user named (--trace) stays theirs
        path = Path(trace)
        if path.resolve().parent == folder and path.is_file():
            path.unlink()
            removed.append(trace)
    if json_:
        print(json.dumps({"deleted": found.id, "traces_removed": removed}))
    else:
        print(f"deleted conversation {found.id} ({found.title})", file=sys.stderr)
