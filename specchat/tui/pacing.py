"""How often the chat screen repaints a streaming answer: within a CPU budget.

While an answer streams, torch's threads use every core of a small machine, so
whatever the screen spends (Textual's compositor, Rich's rendering, the terminal's
writes) is taken from decoding. Measured on a 2-core Xeon with plain decoding, a
repaint of the streaming answer every 0.25 s cost the UI thread 12-15% of a core
and decoding ran at ~0.8x its speed without a screen; with no repaint while
streaming, 2-3% and at par. The cost of one repaint depends on the machine and the
screen (its size, the answer's length), so it is measured, not assumed: after each
repaint the pacer reads the UI thread's own CPU clock and sets the next interval
so that the thread's share stays near BUDGET, between MIN_S and MAX_S. On a fast
machine repaints stay at MIN_S.
"""

from __future__ import annotations

import time

BUDGET = 0.04  # of one core, the UI thread's share while an answer streams
MIN_S = 0.25  # the smoothest the stream repaints
MAX_S = 1.0  # the least often, however slow a repaint is


class RepaintPacer:
    """`due(now)` says whether a streaming repaint may run; `painted(now)` after it."""

    def __init__(self, budget: float | None = None, cpu_clock=time.thread_time) -> None:
        self.budget = BUDGET if budget is None else budget
        self.interval = MIN_S
        self._cpu_clock = cpu_clock  # read on the UI thread: its own CPU seconds
        self._last_wall: float | None = None
        self._last_cpu = 0.0

    def start(self, now: float) -> None:
        """An answer starts streaming: measure from here."""
        self._last_wall, self._last_cpu = now, self._cpu_clock()

    def due(self, now: float) -> bool:
        return self._last_wall is None or now - self._last_wall >= self.interval

    def painted(self, now: float) -> None:
        """A repaint ran: the UI thread's CPU since the last one sets the next interval."""
        cpu = self._cpu_clock()
        if self._last_wall is not None:
            spent = cpu - self._last_cpu  # all the UI thread did since: folds, repaints, input
            wanted = spent / self.budget  # the interval at which that work fits the budget
            # halfway there each time: one slow repaint (a mount, a long line) does not
            # swing the rate; a lasting cost moves it within a few repaints
            self.interval = min(MAX_S, max(MIN_S, (self.interval + wanted) / 2))
        self._last_wall, self._last_cpu = now, cpu
