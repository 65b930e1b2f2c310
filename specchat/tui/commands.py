"""Slash commands typed in the prompt: parsed here, carried out by the app."""

from __future__ import annotations

from dataclasses import dataclass

from specchat.config import PARSERS

HELP = {
    "clear": "/clear — start a new conversation",
    "system": "/system TEXT — set the system prompt (/system alone clears it)",
    "spec": "/spec on|off — speculation on or off for the next turns",
    "k": "/k N|auto — draft length (0 never drafts)",
    "alt": "/alt N|auto — alternatives verified beside each drafted run (greedy; 0 = none)",
    "temp": "/temp X — sampling temperature (0 = greedy)",
    "penalty": "/penalty X — repetition penalty (1 = off, 1.1 mild)",
    "theme": "/theme NAME|PATH — switch theme",
    "export": "/export [PATH] — save the conversation as Markdown",
    "trace": "/trace [PATH] — save the event stream as JSON lines (for specchat replay)",
    "help": "/help — list commands",
}
# Commands that set a run setting: (its name in config.PARSERS, what it takes).
SETTINGS = {"temp": ("temperature", "a number ≥ 0"), "penalty": ("repetition_penalty", "a number > 0 (1 = off)")}
ALIASES = {"temperature": "temp", "speculation": "spec", "sys": "system", "alternatives": "alt",
           "repetition": "penalty"}


class CommandError(ValueError):
    pass


@dataclass
class Command:
    name: str
    arg: str = ""


def parse(text: str) -> Command | None:
    """A Command when `text` is a slash command, None when it is a prompt.
    `//text` sends `/text` as a prompt."""
    if not text.startswith("/") or text.startswith("//"):
        return None
    head, _, arg = text[1:].partition(" ")
    name = ALIASES.get(head.lower(), head.lower())
    if name not in HELP:
        raise CommandError(f"unknown command /{head} (try /help)")
    arg = arg.strip()
    if name == "spec" and arg.lower() not in ("on", "off", ""):
        raise CommandError("/spec takes on or off")
    if name in ("k", "alt"):
        if arg.lower() != "auto" and not (arg.isdigit() and int(arg) <= 64):
            raise CommandError(f"/{name} takes a whole number 0–64 or auto")
    if name in SETTINGS:
        setting, takes = SETTINGS[name]
        try:
            PARSERS[setting](arg)  # the bounds the command line and config file use
        except ValueError:
            raise CommandError(f"/{name} takes {takes}") from None
    if name == "theme" and not arg:
        raise CommandError("/theme takes a theme name or a path")
    return Command(name, arg)


def prompt_text(text: str) -> str:
    """The prompt to send for input that is not a command (`//x` → `/x`)."""
    return text[1:] if text.startswith("//") else text
