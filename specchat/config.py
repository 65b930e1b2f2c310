"""Run options: built-in defaults < config file < SPECCHAT_* environment < command line.

Pure: no torch, no engine. The CLI passes the options the user typed (None when
not given) and gets back one validated `RunConfig`, its drafter picked from the
models on disk (drafter_pick.py, metadata only) when a target is named without one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import platformdirs

from specchat.drafter_pick import FALLBACK_DRAFTER, pick_drafter

# The drafter used when none is asked for, per target. The embedded target gets the
# drafter specchat trained for it (`specchat distill`): see the README's Benchmark for
# what it measured against ngram on a 2-core CPU. Other targets get one picked from
# the models on disk (drafter_pick.py), else FALLBACK_DRAFTER.
DEFAULT_DRAFTERS: dict[str, str] = {"embedded": "smoldraft"}

ENV_PREFIX = "SPECCHAT_"
CONFIG_ENV = "SPECCHAT_CONFIG"  # path of the config file, overriding the user config dir

DEVICES = ("auto", "cuda", "cpu")
QUANTS = ("4bit", "8bit", "int4", "int4-q8head", "q4_1", "fp16", "none")


class ConfigError(ValueError):
    """A bad option value from any source; the CLI reports it as a usage error (exit 2)."""


def default_drafter(target: str) -> str:
    """The shipped default for a target; pick_drafter (in resolve) does better for the rest."""
    return DEFAULT_DRAFTERS.get(target, FALLBACK_DRAFTER)


@dataclass(frozen=True)
class RunConfig:
    target: str = "embedded"
    drafter: str | None = None  # None: default_drafter(target), filled in by resolve()
    k: int | None = None  # None = adaptive ("auto"); 0 = never draft
    alternatives: int | None = None  # None = "auto" (see engine/loop/alternatives.py); 0 = none
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_new_tokens: int = 512
    system: str | None = None
    device: str = "auto"
    quant: str | None = None  # None: the engine's default (4bit on CUDA, fp16 on most CPUs)
    theme: str | None = None
    log: bool = True  # one-shot answers go into the history (`--no-log` for one run)
    # Not a setting: what resolve() says about a drafter it picked (None when the user
    # named one, or the target has a shipped default).
    drafter_note: str | None = None

    @property
    def k_label(self) -> str:
        return "auto" if self.k is None else str(self.k)

    @property
    def alternatives_label(self) -> str:
        return "auto" if self.alternatives is None else str(self.alternatives)


# --- parsing: each takes a raw value (str from env, any TOML type, or a CLI value) ---


def _nonempty_str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("expected a non-empty string")
    return v.strip()


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("expected an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {v!r}")


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {v!r}")


def _auto_or_count(what: str) -> Callable[[Any], int | None]:
    def check(v: Any) -> int | None:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return None
        try:
            n = _int(v)
        except ValueError:
            raise ValueError(f"expected 'auto' or a {what} >= 0, got {v!r}") from None
        if n < 0:
            raise ValueError(f"{what} must be >= 0, got {n}")
        return n

    return check


def _at_least(minimum: float, parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        x = parse(v)
        if x < minimum:
            raise ValueError(f"must be >= {minimum}, got {x}")
        return x

    return check


def _top_p(v: Any) -> float:
    x = _float(v)
    if not 0.0 < x <= 1.0:
        raise ValueError(f"must be in (0, 1], got {x}")
    return x


def _penalty(v: Any) -> float:
    x = _float(v)
    if not x > 0.0:
        raise ValueError(f"must be > 0 (1 = off), got {x}")
    return x


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        s = _nonempty_str(v).lower()
        if s not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return s

    return check


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return v.strip().lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, got {v!r}")


def _seed(v: Any) -> int | None:
    if isinstance(v, str) and v.strip().lower() in ("", "none"):
        return None
    return _int(v)


def _text(v: Any) -> str | None:
    if not isinstance(v, str):
        raise ValueError("expected a string")
    return v or None


PARSERS: dict[str, Callable[[Any], Any]] = {
    "target": _nonempty_str,
    "drafter": _nonempty_str,
    "k": _auto_or_count("draft length"),
    "alternatives": _auto_or_count("number of alternatives"),
    "temperature": _at_least(0.0, _float),
    "top_p": _top_p,
    "top_k": _at_least(0, _int),
    "repetition_penalty": _penalty,
    "seed": _seed,
    "max_new_tokens": _at_least(1, _int),
    "system": _text,
    "device": _choice(DEVICES),
    "quant": _choice(QUANTS),
    "theme": _nonempty_str,
    "log": _bool,
}
assert set(PARSERS) == {f.name for f in fields(RunConfig)} - {"drafter_note"}


def option_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    return ENV_PREFIX + key.upper()


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return platformdirs.user_config_path("specchat") / "config.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's settings, or {} when it does not exist. Unknown keys are errors (typos)."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    unknown = sorted(set(data) - set(PARSERS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(PARSERS)})"
        )
    return data


def resolve(
    cli: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    cli_only: frozenset[str] = frozenset(),
) -> RunConfig:
    """Merge the sources, parse and validate every value, fill in (or pick) the drafter.

    `cli` maps setting names to what was typed (None = not given). `defaults`
    replaces built-in defaults (the benchmark's are greedy and shorter).
    Keys in `cli_only` ignore the config file and environment.
    """
    environ = os.environ if environ is None else environ
    path = config_path(environ)
    layers: list[tuple[str, Callable[[str], str], Mapping[str, Any]]] = [
        (f"config file {path}", lambda k: k, read_config_file(path)),
        ("environment", env_name, {k: environ[env_name(k)] for k in PARSERS if env_name(k) in environ}),
        ("command line", option_name, {k: v for k, v in cli.items() if v is not None}),
    ]
    values: dict[str, Any] = {}
    for key, parse in PARSERS.items():
        if defaults and key in defaults:
            values[key] = defaults[key]
        for source, name, layer in layers:
            if key in layer and (source == "command line" or key not in cli_only):
                try:
                    values[key] = parse(layer[key])
                except ValueError as e:
                    raise ConfigError(f"{name(key)} ({source}): {e}") from None
    config = RunConfig(**values)
    if config.drafter is None and config.target in DEFAULT_DRAFTERS:
        config = replace(config, drafter=DEFAULT_DRAFTERS[config.target])
    elif config.drafter is None:
        pick = pick_drafter(config.target)
        config = replace(config, drafter=pick.drafter, drafter_note=pick.note)
    return config
