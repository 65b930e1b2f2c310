"""CLI test fixtures.

Every test runs with the user's own settings kept out: the config directory is a
temporary one and SPECCHAT_* variables are cleared, except SPECCHAT_CACHE_DIR (the
converted embedded model lives there; a fresh one would cost a 30 s conversion).

In-process runs (Typer's CliRunner) share the session's loaded embedded model;
subprocess runs load their own, as a user's would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

KEEP = {"SPECCHAT_CACHE_DIR"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("SPECCHAT_") and name not in KEEP:
            monkeypatch.delenv(name)
    monkeypatch.delenv("NO_COLOR", raising=False)
    config_home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the history store, the chat's autosave
    return config_home / "specchat"


@pytest.fixture
def config_file(user_dirs):
    """Write the user's config.toml."""

    def write(text: str) -> Path:
        user_dirs.mkdir(parents=True, exist_ok=True)
        path = user_dirs / "config.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli():
    """Invoke the app in-process: cli(*args, input=...) -> Result (stdout and stderr apart)."""
    from specchat.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None, env: dict | None = None):
        return runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def shared_model(embedded, monkeypatch):
    """In-process runs reuse the session's embedded model instead of loading it again."""
    import specchat.models as models

    real = models.load_target

    def load_target(spec="embedded", *, device="auto", **kw):
        if spec == "embedded" and device in ("auto", "cpu") and kw.get("quant") in (None, "none"):
            return embedded
        return real(spec, device=device, **kw)

    monkeypatch.setattr(models, "load_target", load_target)
    return embedded


def specchat(*args: str, input: bytes | None = None, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """`python -m specchat ARGS` in a real process, stdout and stderr pipes (not terminals)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECCHAT_") or k in KEEP}
    env.update(kw.pop("env", {}))
    return subprocess.run([sys.executable, "-m", "specchat", *args], input=input, capture_output=True,
                          timeout=timeout, cwd=REPO, env=env, **kw)
