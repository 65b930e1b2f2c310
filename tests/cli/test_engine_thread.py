"""Every torch call of a session runs on its engine thread (engine/loop/host.py): a
forward from another thread ran at half speed on this project's CPUs."""

from __future__ import annotations

import threading

import pytest
import torch

from specchat.engine.loop.host import EngineHost, THREAD_NAME


@pytest.fixture
def forward_threads():
    """Names of the threads every module forward ran on while the fixture is open."""
    seen: list[str] = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(threading.current_thread().name))
    yield seen
    handle.remove()


def test_a_one_shot_run_loads_warms_up_and_answers_on_the_engine_thread(cli, shared_model, forward_threads):
    result = cli("run", "--drafter", "smoldraft", "--max-new-tokens", "8", "--stats", "Name a colour.")
    assert result.exit_code == 0, result.stderr
    # The warm-up's passes, the drafter's and the target's in the turn: all there.
    assert len(forward_threads) > 100
    assert set(forward_threads) == {THREAD_NAME}
    assert "speedup ≈" in result.stderr  # the warm-up measured a plain step


def test_the_host_runs_calls_and_streams_on_its_thread_and_hands_back_errors():
    host = EngineHost()
    try:
        assert host.call(lambda: threading.current_thread().name) == THREAD_NAME

        def produce():
            for i in range(3):
                yield threading.current_thread().name, i
            raise ValueError("engine broke")

        stream = host.stream(produce)
        assert [next(stream), next(stream), next(stream)] == [(THREAD_NAME, 0), (THREAD_NAME, 1), (THREAD_NAME, 2)]
        with pytest.raises(ValueError, match="engine broke"):
            next(stream)
        assert next(stream, "over") == "over"
        with pytest.raises(KeyError):
            host.call(lambda: {}["missing"])
    finally:
        host.close()
    assert not host.thread.is_alive()


def test_closing_a_stream_early_cancels_and_closes_the_producer_on_the_engine_thread():
    host = EngineHost()
    closed, cancelled = threading.Event(), threading.Event()

    def produce():
        try:
            for i in range(1000):
                cancelled.wait(0.01)
                yield i
        finally:
            closed.set()

    stream = host.stream(produce, on_close=cancelled.set)
    assert next(stream) == 0
    stream.close()
    assert closed.wait(5) and cancelled.is_set()
    host.close()
