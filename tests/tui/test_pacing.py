"""The streaming repaint pacer: its interval follows the UI thread's measured CPU."""

from specchat.tui import pacing
from specchat.tui.pacing import RepaintPacer


class Clock:
    def __init__(self) -> None:
        self.cpu = 0.0

    def __call__(self) -> float:
        return self.cpu


def paced(cost_per_paint: float, paints: int) -> RepaintPacer:
    """A pacer after `paints` repaints, each run when due and costing `cost_per_paint` CPU seconds."""
    clock = Clock()
    pacer = RepaintPacer(budget=0.04, cpu_clock=clock)
    now = 0.0
    pacer.start(now)
    for _ in range(paints):
        while not pacer.due(now):
            now += 0.01
        clock.cpu += cost_per_paint
        pacer.painted(now)
    return pacer


def test_cheap_repaints_stay_at_the_smoothest_rate():
    assert paced(cost_per_paint=0.002, paints=20).interval == pacing.MIN_S


def test_costly_repaints_slow_down_to_fit_the_budget():
    # 20 ms a repaint within 4% of a core: one every 0.5 s
    assert abs(paced(cost_per_paint=0.02, paints=30).interval - 0.5) < 0.02


def test_the_slowest_rate_is_bounded():
    assert paced(cost_per_paint=0.5, paints=10).interval == pacing.MAX_S


def test_a_new_answer_measures_from_its_start():
    clock = Clock()
    pacer = RepaintPacer(budget=0.04, cpu_clock=clock)
    clock.cpu = 5.0  # work before the answer (loading, typing) does not count
    pacer.start(10.0)
    assert not pacer.due(10.1) and pacer.due(10.0 + pacing.MIN_S)
    pacer.painted(10.0 + pacing.MIN_S)
    assert pacer.interval == pacing.MIN_S
