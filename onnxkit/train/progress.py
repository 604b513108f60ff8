"""Progress on stderr: a live bar on a terminal (loss, learning rate, samples/s), one line per epoch."""

from __future__ import annotations

import os
import sys
import time
import warnings
from typing import TextIO

WARNING = "warning: "  # how a line that warns begins
TERMINAL_VARIABLE = "ONNXKIT_TERMINAL"  # "1": stderr is relayed to a terminal (set by `train --workers` for its ranks)


class TrainingWarning(UserWarning):
    """A warning of `fit` (one class only, weights that stay fixed, ...) given while it runs quietly."""


class Progress:
    """Silent when `enabled` is false, but for its warning lines: those go through `warnings.warn` as
    `TrainingWarning`s then (unless `warn` is false: a data-parallel rank other than 0); the live bar
    only when the stream is a terminal, or relayed to one ($ONNXKIT_TERMINAL)."""

    def __init__(self, enabled: bool, stream: TextIO | None = None, *, warn: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.warns = warn
        self.live = enabled and (self.stream.isatty() or os.environ.get(TERMINAL_VARIABLE) == "1")
        self._last_draw = 0.0
        self._label = ""
        self._total = 0

    def epoch_start(self, epoch: int, epochs: int | None, batches: int) -> None:
        self._label = f"epoch {epoch}" + (f"/{epochs}" if epochs else "")
        self._total = batches

    def step(self, done: int, loss: float, lr: float, samples_per_s: float) -> None:
        """Redraw the bar with `done` of the epoch's batches; at most 10 times a second, and at the end."""
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and done < self._total:
            return
        self._last_draw = now
        width = 24
        filled = int(width * done / max(1, self._total))
        bar = "#" * filled + "." * (width - filled)
        self._write(
            f"\r{self._label} [{bar}] {done}/{self._total} loss {loss:.4f} lr {lr:.2e} {samples_per_s:,.0f} samples/s"
        )

    def line(self, text: str) -> None:
        if not self.enabled:
            if self.warns and text.startswith(WARNING):  # quiet is no progress, not no warnings
                warn(text.removeprefix(WARNING))
            return
        self._write(("\r\033[K" if self.live else "") + text + "\n")

    def _write(self, text: str) -> None:
        """Write and flush; a reader that went away (`onnxkit train ... | head`) silences the
        progress, and training goes on."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            self.enabled = self.live = False


def warn(text: str) -> None:
    """`warnings.warn(text, TrainingWarning)`, attributed to the first caller outside onnxkit: the warning names the
    user's `fit(...)` line, not onnxkit's."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == "onnxkit":
        frame, level = frame.f_back, level + 1
    warnings.warn(text, TrainingWarning, stacklevel=level)
