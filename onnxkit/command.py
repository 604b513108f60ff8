"""The `onnxkit` command's entry point (its console script, and `python -m onnxkit`).

Importing the CLI takes the command's first ~0.1 s (click, numpy, onnx). A stop in that time ends the command as a
later one does, with one `error: stopped by SIGINT` line and status 130 (143 for SIGTERM), where Python printed a
KeyboardInterrupt traceback (12-30 lines, status -2) and SIGTERM killed the process. Nothing but the standard
library (and onnxkit's two modules of it: signals, mpi_environment) is imported before the handler is in place.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from onnxkit.mpi_environment import end_unjoined_rank
from onnxkit.signals import STOP_SIGNALS


class _Stopped(BaseException):
    """A stop signal that came outside the CLI's own handlers (before they were installed, or after)."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped(signum)


def run() -> None:
    """Import the CLI and run it (`onnxkit.cli.main`, whose own handlers answer stops while a command runs), a stop
    outside them answered here. Once the command has ended, stops are ignored: the interpreter waits for threads as it
    exits, and a second Ctrl-C there printed a KeyboardInterrupt traceback or killed the process by the signal, where
    the command had chosen its status. An MPI rank that a stop ended before it joined its world dies of the signal
    (`end_unjoined_rank`)."""
    _answer(_stopped)
    try:
        from onnxkit.cli import main

        main()
    except _Stopped as e:
        _answer(signal.SIG_IGN)
        signum = e.args[0]
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        end_unjoined_rank(signum)
        sys.exit(128 + signum)
    except SystemExit as e:
        _answer(signal.SIG_IGN)
        if e.code in tuple(128 + s for s in STOP_SIGNALS):
            end_unjoined_rank(e.code - 128)
        raise
    finally:
        _answer(signal.SIG_IGN)


def _answer(handler: Any) -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
