"""Options that take an optional value: `--resume [ID]`, `-c/--continue [ID]`.

Typer (0.29) has no optional option values, so the command line is read here
first: such an option not followed by an id (a whole number or `last`) gets
`last` inserted after it. `specchat run -c "Why?"` is then `-c last "Why?"`, and
`specchat run -c 4 "Why?"` continues conversation 4.
"""

from __future__ import annotations

OPTIONAL = {"--resume", "-c", "--continue"}
OTHER_COMMANDS = {"bench", "replay", "models", "distill", "history"}


def is_id(token: str) -> bool:
    return token.isdigit() or token.lower() == "last"


def with_optional_values(args: list[str]) -> list[str]:
    first = next((a for a in args if not a.startswith("-")), None)
    if first in OTHER_COMMANDS:
        return args
    out: list[str] = []
    for i, token in enumerate(args):
        if token == "--":
            return out + args[i:]
        out.append(token)
        if token in OPTIONAL and not (i + 1 < len(args) and is_id(args[i + 1])):
            out.append("last")
    return out
