"""Which of two sessions of one training graph (all the threads, and one) a mid-size step runs on.

On a machine of its own, a step of a few million multiply-adds runs 8-12% faster on two threads than on one. On a
2-vCPU cloud VM whose host at times runs the two vCPUs against each other, the same two threads take twice one's
time for seconds to minutes on end (digits-cnn at batch 64: 1.8-2.1 ms a step against one thread's 0.93; 0.79
against 0.93 in the host's other phases), while one thread's time holds. So the session runs the one that has been
faster lately and gives the other PROBE_RUNS runs after every PROBE_SECONDS of runs: a run shorter than that never
opens the second session. Both give the same bits (checked for each shape of batch; see `OnnxSession`), so which one
ran never shows in the weights.
"""

from __future__ import annotations

import statistics
from collections import deque

PROBE_SECONDS = 1.0  # seconds of runs between two timings of the other session
PROBE_RUNS = 3  # runs the other session gets each time; the median of the last PROBE_RUNS runs of each is compared
SWITCH_BELOW = 0.9  # the other session takes over when its median is under this share of the current one's


class FasterOfTwo:
    """Picks session 0 or 1 for each run, from the run times it is told."""

    def __init__(self) -> None:
        self.current = 0
        self._times: tuple[deque, deque] = (deque(maxlen=PROBE_RUNS), deque(maxlen=PROBE_RUNS))
        self._elapsed = 0.0  # seconds of runs since the last timing of the other session
        self._probe_left = 0  # runs of the other session still to come in this timing

    def pick(self) -> int:
        """The session of the next run: the current one, or the other while it is being timed."""
        return 1 - self.current if self._probe_left else self.current

    def record(self, session: int, seconds: float) -> None:
        """The run just made on `session` took `seconds`; at the end of a timing, switch if the other was faster."""
        self._times[session].append(seconds)
        if not self._probe_left:
            self._elapsed += seconds
            if self._elapsed >= PROBE_SECONDS:
                self._elapsed, self._probe_left = 0.0, PROBE_RUNS
                self._times[1 - self.current].clear()
            return
        self._probe_left -= 1
        now, other = (statistics.median(t) if len(t) == PROBE_RUNS else None for t in
                      (self._times[self.current], self._times[1 - self.current]))
        if not self._probe_left and now is not None and other is not None and other < SWITCH_BELOW * now:
            self.current = 1 - self.current
