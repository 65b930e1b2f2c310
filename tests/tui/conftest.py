"""TUI test fixtures. The user's own data directory is never touched: every test
gets a temporary one (XDG_DATA_HOME and an explicit data_dir)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

from specchat.engine.loop.events import event_from_json

TRACE = Path(__file__).parent / "traces" / "session.jsonl"
SIZE = (120, 40)


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def trace_events():
    return [event_from_json(line) for line in TRACE.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests here on a fresh event loop (no async plugin is a dependency)."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(pyfuncitem.obj(**args))
        return True
    return None
