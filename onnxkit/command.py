"""The `onnxkit` command's entry point (its console script, and `python -m onnxkit`).

Importing the CLI takes the command's first ~0.1 s (click, numpy, onnx). A stop in that time ends the command as a
later one does, with one `error: stopped by SIGINT` line and status 130 (143 for SIGTERM), where Python printed a
KeyboardInterrupt traceback (12-30 lines, status -2) and SIGTERM killed the process. Only the standard library is
imported before the handler is in place.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from onnxkit.mpi_environment import end_unjoined_rank

STOPS = (signal.SIGINT, signal.SIGTERM)


class _Stopped(BaseException):
    """A stop signal that came outside the CLI's own handlers (before they were installed, or after)."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def run() -> None:
    """Import the CLI and run it (`onnxkit.cli.entry`, whose own handlers answer stops while a command runs), a
    stop outside them answered here."""
    for s in STOPS:
        signal.signal(s, _stopped)
    try:
        from onnxkit.cli import entry

        entry()
    except _Stopped as e:
        signum = e.args[0]
        for s in STOPS:
            signal.signal(s, signal.SIG_IGN)
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        end_unjoined_rank(signum)  # an MPI rank dies of the signal (see there)
        sys.exit(128 + signum)
