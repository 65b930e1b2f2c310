"""Theme files → Textual themes.

A theme file is JSON: ``name``, ``dark``, ``colors`` (Textual's theme colours) and
``provenance`` (one colour per token provenance). Provenance colours travel in the
Textual theme's ``variables`` as ``prov-<kind>``, so switching theme switches them too.

Loading never raises on a bad file: it returns the themes that loaded *and* the
files that failed with the reason, so the app can say so and fall back.
"""

from __future__ import annotations

import json
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

DEFAULT_THEME = "specchat-dark"
PROVENANCE_KINDS = ("accepted", "correction", "bonus", "target", "rejected", "user")
_COLOR_KEYS = (
    "primary", "secondary", "accent", "foreground", "background",
    "surface", "panel", "warning", "error", "success",
)
# Used when the active theme is not one of ours (e.g. a built-in Textual theme).
FALLBACK_PROVENANCE = {
    "accepted": "#98c379",
    "correction": "#e5c07b",
    "bonus": "#56b6c2",
    "target": "#d7dae0",
    "rejected": "#e06c75",
    "user": "#61afef",
}


class ThemeError(Exception):
    """A theme file that cannot be used; the message names the file and the problem."""


@dataclass
class ThemeLoad:
    themes: dict[str, Theme]
    failures: list[str]  # one user-facing line per file that failed


def theme_dirs() -> list[Path]:
    """Where shipped themes live: the source tree (checkout or editable install),
    then the data directory a wheel install puts them in (pyproject data-files)."""
    here = Path(__file__).resolve()
    dirs = [here.parents[2] / "themes"]
    for base in (sysconfig.get_path("data"), getattr(site, "USER_BASE", None)):
        if base:
            dirs.append(Path(base) / "share" / "specchat" / "themes")
    return [d for d in dirs if d.is_dir()]


def _check_color(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ThemeError(f"{path.name}: colour {key!r} must be a string, got {value!r}")
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeError(f"{path.name}: colour {key!r} is not a colour: {value!r}") from None
    return value


def load_theme_file(path: Path) -> Theme:
    """Read and check one theme file; ThemeError says what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThemeError(f"{path}: cannot read theme file ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ThemeError(f"{path.name}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ThemeError(f"{path.name}: a theme file must hold a JSON object")
    name = data.get("name") or path.stem
    colors = data.get("colors")
    if not isinstance(colors, dict) or "primary" not in colors:
        raise ThemeError(f"{path.name}: needs a \"colors\" object with at least \"primary\"")
    unknown = set(colors) - set(_COLOR_KEYS)
    if unknown:
        raise ThemeError(f"{path.name}: unknown colour names {sorted(unknown)}")
    checked = {k: _check_color(path, k, v) for k, v in colors.items()}
    prov = data.get("provenance", {})
    if not isinstance(prov, dict):
        raise ThemeError(f"{path.name}: \"provenance\" must be an object")
    missing = [k for k in PROVENANCE_KINDS if k not in prov]
    if missing:
        raise ThemeError(f"{path.name}: provenance colours missing: {', '.join(missing)}")
    variables = {f"prov-{k}": _check_color(path, f"provenance.{k}", prov[k]) for k in PROVENANCE_KINDS}
    return Theme(name=str(name), dark=bool(data.get("dark", True)), variables=variables, **checked)


def load_themes(extra: list[Path] | None = None) -> ThemeLoad:
    """Every shipped theme (first directory wins per name) plus `extra` files."""
    themes: dict[str, Theme] = {}
    failures: list[str] = []
    files = [f for d in theme_dirs() for f in sorted(d.glob("*.json"))] + list(extra or [])
    for path in files:
        try:
            theme = load_theme_file(path)
        except ThemeError as exc:
            failures.append(str(exc))
            continue
        if path in (extra or []) or theme.name not in themes:
            themes[theme.name] = theme
    return ThemeLoad(themes, failures)


def resolve_theme_arg(arg: str | None, load: ThemeLoad) -> tuple[str, str | None]:
    """`--theme NAME|PATH` → (theme name to use, warning or None).

    A name may be given with or without the ``specchat-`` prefix. A path is loaded
    (and registered by the caller from `load`). Anything unusable falls back to the
    default theme with a one-line reason.
    """
    if not arg:
        return DEFAULT_THEME, None
    if arg.endswith(".json") or "/" in arg or Path(arg).is_file():
        try:
            theme = load_theme_file(Path(arg))
        except ThemeError as exc:
            return DEFAULT_THEME, f"{exc}; using {DEFAULT_THEME}"
        load.themes[theme.name] = theme
        return theme.name, None
    for name in (arg, f"specchat-{arg}"):
        if name in load.themes:
            return name, None
    known = ", ".join(sorted(load.themes))
    return DEFAULT_THEME, f"unknown theme {arg!r} (known: {known}); using {DEFAULT_THEME}"


def provenance_colors(theme: Theme | None) -> dict[str, str]:
    """The provenance colours of a theme, falling back per kind."""
    variables = theme.variables if theme else {}
    return {k: variables.get(f"prov-{k}", FALLBACK_PROVENANCE[k]) for k in PROVENANCE_KINDS}
