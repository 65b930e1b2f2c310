"""The command line: parse, resolve settings and models, hand over.

`run` goes to the TUI, or to the one-shot printer when a prompt is given or stdin
is not a terminal; `bench` to the benchmark; `replay` to the TUI's replay; `models`
to the inventory. Everything heavy (torch, the engine, Textual) is imported inside
the command that needs it, so `--help` is instant.

Exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted. Errors are
one line on stderr; `--debug` adds the traceback.
"""

from __future__ import annotations

import json
import sys
import traceback
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from typer.core import TyperGroup

# Typer vendors click; its exception types are only reachable here (typer is pinned <0.30).
from typer._click.exceptions import ClickException, UsageError

from specchat.config import DEVICES, QUANTS, ConfigError, RunConfig, default_drafter, resolve
from specchat.drafter_pick import FALLBACK_DRAFTER, NOTE_PREFIX
from specchat.oneshot import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE


class Fail(Exception):
    """An expected failure: its message is the one line shown, `code` the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _err(message: str) -> None:
    print(f"specchat: error: {message}", file=sys.stderr, flush=True)


class _OneLineErrors(TyperGroup):
    """Click's usage errors as one line (not Typer's boxed panel), same exit codes."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from specchat.optional_values import with_optional_values

        args = with_optional_values(sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(args, prog_name or "specchat", complete_var,
                                standalone_mode=False, **extra)
        except UsageError as e:
            where = e.ctx.command_path if e.ctx else "specchat"
            _err(f"{e.format_message()} (see `{where} --help`)")
            code = EXIT_USAGE
        except ClickException as e:
            _err(e.format_message())
            code = e.exit_code
        except typer.Abort:
            code = EXIT_INTERRUPTED
        code = code if isinstance(code, int) else EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Terminal chat on a local speculative-decoding engine that shows its speculation.",
)


def main() -> None:
    # Model output may hold characters the terminal's encoding lacks: replace, never crash.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    from specchat.quiet import quiet_libraries

    quiet_libraries(debug="--debug" in sys.argv[1:])
    app(prog_name="specchat")


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """Turns every failure into one line and an exit code (and a traceback under --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except (ConfigError, Fail, KeyboardInterrupt, BrokenPipeError, Exception) as e:
        code, message = _classify(e)
        if debug and not isinstance(e, (ConfigError, KeyboardInterrupt)):
            traceback.print_exc()
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
        elif message:
            _err(message)
        raise typer.Exit(code) from None


def _classify(e: BaseException) -> tuple[int, str]:
    if isinstance(e, ConfigError):
        return EXIT_USAGE, str(e)
    if isinstance(e, Fail):
        return e.code, str(e)
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(e, BrokenPipeError):
        return EXIT_OK, ""  # the reader (`| head`) has all it wanted
    # A ModelError or TraceError implies its module was imported: no import here.
    for module, name in (("specchat.models", "ModelError"), ("specchat.tui.persist", "TraceError"),
                         ("specchat.history.store", "HistoryError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(e, cls):
            return EXIT_ERROR, str(e)
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return EXIT_ERROR, f"out of memory: {_first_line(e)} (try --quant 4bit, a smaller model or --device cpu)"
    from specchat.oneshot import EngineFailure

    if isinstance(e, EngineFailure):
        return EXIT_ERROR, f"the engine failed: {_first_line(e)} (rerun with --debug for the traceback)"
    return EXIT_ERROR, f"{type(e).__name__}: {_first_line(e)} (rerun with --debug for the traceback)"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _silence_stdout() -> None:
    # Python flushes stdout at exit; with the pipe closed that would print an error.
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# --- options shared by run and bench ------------------------------------------------

MODELS = "Models and sampling (defaults: config file, then SPECCHAT_* variables)"

_D = RunConfig()  # built-in defaults, shown in --help from the one place they live


def _opt(name: str, help: str = "", default: Any = None, **kw: Any) -> Any:
    return typer.Option(name, help=help, rich_help_panel=MODELS,
                        show_default=str(default) if default is not None else False, **kw)


TargetOpt = Annotated[Optional[str], _opt(
    "--target", "Target model: embedded, a hub id, a local directory or a .gguf file.", _D.target)]
DrafterOpt = Annotated[Optional[str], _opt(
    "--drafter", "Drafter: smoldraft (the embedded target's default), ngram, none, a directory "
    "`specchat distill` wrote, or a model spec with the target's vocabulary.",
    f"{default_drafter('embedded')} for the embedded target; for others the smallest cached model "
    "of its family and tokenizer, else ngram")]
KOpt = Annotated[Optional[str], _opt("--k", "Draft length, or auto (adaptive).", _D.k_label, metavar="N|auto")]
AlternativesOpt = Annotated[Optional[str], _opt(
    "--alternatives", "Other candidates verified beside each drafted run (greedy only); auto: fill the "
    "verify pass to a width that costs little more on this device.", _D.alternatives_label, metavar="N|auto")]
TemperatureOpt = Annotated[Optional[float], _opt("--temperature", "0 = greedy.", _D.temperature)]
TopPOpt = Annotated[Optional[float], _opt("--top-p", "Nucleus sampling mass.", _D.top_p)]
TopKOpt = Annotated[Optional[int], _opt("--top-k", "0 = off.", _D.top_k)]
PenaltyOpt = Annotated[Optional[float], _opt(
    "--repetition-penalty", "Make tokens already in the answer less likely (1 = off; 1.1 is mild), "
    "as transformers' repetition_penalty. Speculation stays exact under it.", _D.repetition_penalty)]
SeedOpt = Annotated[Optional[int], _opt("--seed", "Seed for sampling.")]
MaxNewOpt = Annotated[Optional[int], _opt("--max-new-tokens", "Longest answer, in tokens.", _D.max_new_tokens)]
DeviceOpt = Annotated[Optional[str], _opt("--device", "", _D.device, metavar="|".join(DEVICES))]
QuantOpt = Annotated[Optional[str], _opt(
    "--quant", "Weight quantization.", "4bit on CUDA, measured on CPU (q4_1, int4, int4-q8head or fp16)", metavar="|".join(QUANTS))]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")]


class Color(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


class Peers(str, Enum):
    none = "none"
    hf = "hf"


def _settings(config: RunConfig):
    from specchat.engine.loop.session import GenerationSettings

    return GenerationSettings(k=config.k, alternatives=config.alternatives, temperature=config.temperature,
                              top_p=config.top_p, top_k=config.top_k,
                              repetition_penalty=config.repetition_penalty, seed=config.seed,
                              max_new_tokens=config.max_new_tokens)


def _progress(message: str) -> None:
    # Loading notes (the one-time conversion takes a while) for a person, not for a pipe.
    if sys.stderr.isatty():
        print(f"specchat: {message}", file=sys.stderr, flush=True)


def _load(config: RunConfig, progress=_progress):
    """(target, drafter, notes) as the config asks."""
    from specchat.models import load_drafter, load_target

    if not sys.stderr.isatty():
        # transformers' "Loading weights" bars are for people; keep logs and pipes clean.
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    target = load_target(config.target, device=config.device, quant=config.quant, progress=progress,
                         lean=True)
    notes = [config.drafter_note] if config.drafter_note else []
    try:
        drafter = load_drafter(config.drafter, target, quant=config.quant, progress=progress)
    except Exception as exc:  # noqa: BLE001 - whatever stops a picked drafter (a bad file, memory)
        if not notes or config.drafter == FALLBACK_DRAFTER:
            raise  # the user named this drafter: theirs to fix
        # A drafter picked for the user must not stop the run it was picked for.
        drafter = load_drafter(FALLBACK_DRAFTER, target)
        notes = [f"{NOTE_PREFIX}{FALLBACK_DRAFTER} for target {config.target}: the picked "
                 f"{config.drafter} did not load ({_first_line(exc)})"]
    return target, drafter, notes


def _open_session(config: RunConfig, progress=_progress):
    """The chat session every front end runs: models loaded and warmed up. Called on
    the engine thread (EngineHost.start), like every later torch call of the session."""
    from specchat.engine.loop.session import ChatSession
    from specchat.models import settle_format

    target, drafter, notes = _load(config, progress)
    settle_format(target, drafter, progress)
    session = ChatSession(target, drafter, system_prompt=config.system, settings=_settings(config))
    session.notes = notes + list(getattr(drafter, "load_notes", []))
    session.warm_up(progress)
    return session


# --- run --------------------------------------------------------------------------


def _read_stdin() -> str:
    # Bytes, decoded leniently: invalid UTF-8 is replaced, never fatal.
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "replace")
    return data.decode("utf-8", errors="replace")


def compose_prompt(argument: str | None, stdin_text: str | None) -> str:
    """stdin is the context, the argument the instruction (as `llm` does)."""
    parts = [p for p in (stdin_text, argument) if p and p.strip()]
    return "\n\n".join(p.strip("\n") for p in parts)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # closed
        return False


@app.command()
def run(
    prompt: Annotated[Optional[str], typer.Argument(
        help="Ask this and print the answer (one-shot). Without it, and with a terminal on stdin, "
        "the chat screen opens.", show_default=False)] = None,
    target: TargetOpt = None,
    drafter: DrafterOpt = None,
    k: KOpt = None,
    alternatives: AlternativesOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: PenaltyOpt = None,
    seed: SeedOpt = None,
    max_new_tokens: MaxNewOpt = None,
    system: Annotated[Optional[str], typer.Option("--system", help="System prompt.", rich_help_panel=MODELS)] = None,
    device: DeviceOpt = None,
    quant: QuantOpt = None,
    theme: Annotated[Optional[str], typer.Option("--theme", help="Chat screen theme: a name or a theme file.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", metavar="[ID]", help="Chat screen: reopen the last conversation, or ID (`specchat history`).")] = None,
    continue_: Annotated[Optional[str], typer.Option(
        "--continue", "-c", metavar="[ID]", help="One-shot: answer as the next turn of the last conversation, "
        "or of ID, and save it there.")] = None,
    no_log: Annotated[bool, typer.Option(
        "--no-log", help="One-shot: keep this answer out of the history (config: log = false).")] = False,
    show_rejected: Annotated[bool, typer.Option(
        "--show-rejected", help="Also print rejected drafts, struck through (coloured output only).")] = False,
    color: Annotated[Color, typer.Option("--color", help="Colour the answer by provenance. "
                                         "auto: on a terminal, unless NO_COLOR is set.")] = Color.auto,
    stats: Annotated[bool, typer.Option("--stats", help="Print a summary line to stderr.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the stream.")] = False,
    trace: Annotated[Optional[Path], typer.Option(
        "--trace", metavar="FILE", help="Write the event stream as JSON lines (for `specchat replay`).",
        dir_okay=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Chat: the TUI, or one answer on stdout when given a prompt or piped input."""
    with _errors(debug):
        config = resolve(dict(target=target, drafter=drafter, k=k, alternatives=alternatives,
                              temperature=temperature, top_p=top_p,
                              top_k=top_k, repetition_penalty=repetition_penalty, seed=seed,
                              max_new_tokens=max_new_tokens, system=system, device=device, quant=quant,
                              theme=theme))
        if prompt is None and _stdin_is_tty():
            one_shot_only = [o for o, v in (("--json", json_), ("--stats", stats), ("--trace", trace)) if v]
            one_shot_only += ["--continue"] if continue_ is not None else []
            if one_shot_only:
                raise Fail(f"{one_shot_only[0]} applies to one-shot mode (give a prompt or pipe text on stdin)",
                           EXIT_USAGE)
            _check_theme(config.theme)
            raise typer.Exit(_run_tui(config, resume))
        if resume is not None:
            raise Fail("--resume opens the chat screen; -c/--continue [ID] continues a conversation here",
                       EXIT_USAGE)
        stdin_text = None if _stdin_is_tty() else _read_stdin()
        text = compose_prompt(prompt, stdin_text)
        if not text.strip():
            raise Fail("nothing to answer: give a prompt argument or pipe text on stdin", EXIT_USAGE)
        if trace is not None and not trace.parent.is_dir():  # say so before a model loads
            raise Fail(f"--trace: no such directory: {trace.parent}", EXIT_USAGE)
        from specchat.engine.loop.host import EngineHost
        from specchat.history.oneshot import OneShotLog
        from specchat.oneshot import Options, run_turn

        log = OneShotLog.open(continue_, enabled=config.log and not no_log)  # before a model loads
        host = EngineHost()
        try:
            session = host.start(lambda progress: _open_session(config, progress), _progress)
            for note in session.notes:  # a drafter pick is news, the rest are warnings
                kind = "" if note.startswith(NOTE_PREFIX) else "warning: "
                print(f"specchat: {kind}{note}", file=sys.stderr, flush=True)
            options = Options(color=color.value, show_rejected=show_rejected, stats=stats, json=json_,
                              trace=str(trace) if trace else None)
            log.prepare(session)
            code = run_turn(log.wrap(session, trace), text, options, sys.stdout, sys.stderr)
        finally:
            log.close()
            host.close()
    raise typer.Exit(code)


def _run_tui(config: RunConfig, resume: str | None) -> int:
    from specchat.tui.app import run_tui

    # Called by the TUI on its engine thread once the screen is up.
    return run_tui(lambda progress: _open_session(config, progress), theme=config.theme, resume=resume)


def _check_theme(theme: str | None) -> None:
    """An unknown theme is a usage error here (the TUI itself would fall back)."""
    if theme is None:
        return
    from specchat.tui.themes import load_themes, resolve_theme_arg

    _, warning = resolve_theme_arg(theme, load_themes())
    if warning:
        raise Fail(warning.rsplit("; using", 1)[0], EXIT_USAGE)


@app.callback(invoke_without_command=True)
def _default(ctx: typer.Context) -> None:
    """Terminal chat on a local speculative-decoding engine that shows its speculation.

    `specchat` alone is `specchat run`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


# --- bench ------------------------------------------------------------------------


@app.command()
def bench(
    target: TargetOpt = None,
    drafter: DrafterOpt = None,
    k: KOpt = None,
    alternatives: AlternativesOpt = None,
    temperature: Annotated[Optional[float], _opt("--temperature", "0 = greedy.", 0.0)] = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: PenaltyOpt = None,
    seed: SeedOpt = None,
    max_new_tokens: Annotated[Optional[int], _opt("--max-new-tokens", "Longest answer per turn.", 128)] = None,
    device: DeviceOpt = None,
    quant: QuantOpt = None,
    prompts: Annotated[Optional[Path], typer.Option(
        "--prompts", metavar="FILE", dir_okay=False,
        help='JSON lines: {"category": ..., "prompt": ...} or {"category": ..., "turns": [...]}.')] = None,
    category: Annotated[Optional[list[str]], typer.Option(
        "--category", help="Only this category (repeatable).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N prompts per category.")] = None,
    peers: Annotated[Peers, typer.Option("--peers", help="Also run transformers' generate() and "
                                         "assisted generation on the same models and prompts.")] = Peers.none,
    first_turns: Annotated[int, typer.Option(
        "--first-turns", min=0, metavar="N",
        help="Also run the first turn of N prompts per category in fresh `specchat run` processes, "
        "speculation off and on (a user's one-shot path, cold start included); 0: skip.")] = 1,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Measure speculation against the same engine with speculation off.

    Sampling settings come from this command line only (greedy by default), not from
    the chat's config file or environment.
    """
    from specchat.bench import command

    with _errors(debug):
        config = resolve(dict(target=target, drafter=drafter, k=k, alternatives=alternatives,
                              temperature=temperature, top_p=top_p,
                              top_k=top_k, repetition_penalty=repetition_penalty, seed=seed,
                              max_new_tokens=max_new_tokens, device=device, quant=quant),
                         defaults=command.BENCH_DEFAULTS, cli_only=command.COMMAND_LINE_ONLY)
        try:
            chosen, source = command.choose_prompts(prompts, category, limit)
        except ValueError as e:  # PromptFileError included
            raise Fail(str(e), EXIT_USAGE) from None
        command.run(config, _settings(config), chosen, source, peers=peers.value, as_json=json_,
                    open_session=_open_session, first_turns=first_turns)


# --- models -----------------------------------------------------------------------


@app.command()
def models(
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    debug: DebugOpt = False,
) -> None:
    """What could run here: the offline default, the device, quantization, cached models."""
    with _errors(debug):
        from specchat import inventory

        inv = inventory.take()
        if json_:
            print(json.dumps(inv.to_dict(), ensure_ascii=False))
        else:
            from rich.console import Console

            inventory.render(inv, Console())


# --- distill ----------------------------------------------------------------------


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def distill(ctx: typer.Context) -> None:
    """Train the embedded target's drafter from its own answers (see --help of the command)."""
    from specchat.distill import main as distill_main

    raise typer.Exit(distill_main(list(ctx.args)))


# --- history ----------------------------------------------------------------------

from specchat.history.command import history_app  # noqa: E402 - light: typer and sqlite3

app.add_typer(history_app, name="history")


# --- replay -----------------------------------------------------------------------


@app.command()
def replay(
    trace: Annotated[Path, typer.Argument(help="A trace written by `specchat run --trace FILE`.",
                                          exists=True, dir_okay=False, show_default=False)],
    theme: Annotated[Optional[str], typer.Option("--theme", help="Chat screen theme.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Play a recorded trace back on the chat screen."""
    with _errors(debug):
        config = resolve(dict(theme=theme))
        _check_theme(config.theme)
        from specchat.tui.app import run_replay

        code = run_replay(trace, theme=config.theme)
    raise typer.Exit(code)
