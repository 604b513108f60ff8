"""Ctrl-C and SIGTERM: handlers installed for a block of code, the previous ones put back after it.

Python sets signal handlers only on the main thread; off it these helpers change nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, Any], Any]


@contextlib.contextmanager
def handled(handler: Handler | None, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[dict[int, Any]]:
    """Within the block `handler` answers `signals` (None: the current handlers stay); after it the
    previous handlers are back. Yields the previous handlers, which `restore` can put back early."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {s: signal.getsignal(s) for s in signals}
    try:
        if handler is not None:
            for s in signals:
                signal.signal(s, handler)
        yield previous
    finally:
        restore(previous)


def restore(handlers: Mapping[int, Any]) -> None:
    """Put back handlers saved by `handled` (those Python did not install are left as they are)."""
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
