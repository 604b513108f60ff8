"""Ctrl-C and SIGTERM: handlers installed for a block of code, the previous ones put back after it; and the
stop a command was asked for, which its writes check before they commit.

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


_STOPS: list[int] = []  # the stop signals a command received (`stop`), until it has ended (`stops_recorded`)
_HELD = {"depth": 0, "pending": False, "commits": 0}  # held_back blocks open; a stop during them; those that commit


@contextlib.contextmanager
def stops_recorded() -> Iterator[list[int]]:
    """A block (a command's run) whose `stop` calls are recorded: yields the signals received, cleared after it."""
    _STOPS.clear()
    try:
        yield _STOPS
    finally:
        _STOPS.clear()
        _HELD["pending"] = False


def stop(signum: int, frame: Any = None) -> None:
    """A signal handler: record `signum`, then stop the program where it is, as Ctrl-C does (KeyboardInterrupt);
    inside `held_back`, once that block ends."""
    _STOPS.append(signum)
    if _HELD["depth"]:
        _HELD["pending"] = True
        return
    raise KeyboardInterrupt


def last_stop() -> int:
    """The last stop signal the command received (SIGINT when none was recorded, as for a KeyboardInterrupt)."""
    return _STOPS[-1] if _STOPS else signal.SIGINT


def check_stop() -> None:
    """KeyboardInterrupt again if a stop was recorded: `stop`'s can be lost where C code clears errors (2 of 60
    `quantize` runs sent SIGTERM while importing numpy.random went on to write their output and exit 0: the
    interrupt landed in collections.abc's register, called by a Cython module's init, which dropped it). Checked
    before a write commits (`files.atomic_path`), so a stopped command never leaves its output."""
    if _STOPS and not _HELD["commits"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def held_back(commit: bool = False) -> Iterator[None]:
    """A short block that `stop` does not interrupt: a stop during it raises its KeyboardInterrupt as it ends. For
    making something that needs cleaning up and naming it to the `finally` that does: a stop landing just after a
    scratch folder was made and before its cleanup was armed left the folder behind (1 of 60 `quantize` runs sent
    SIGTERM as the folder appeared). Blocking the signal instead would not do: Python runs its handler on the main
    thread whichever thread the OS gives the signal to, and ONNX Runtime's threads take it. Off the main thread,
    where no handler runs, it changes nothing. `commit`: the writes inside complete though a stop was asked for
    (a stopped run recording that it stopped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HELD["depth"] += 1
    _HELD["commits"] += commit
    try:
        yield
    finally:
        _HELD["depth"] -= 1
        _HELD["commits"] -= commit
    if not _HELD["depth"] and _HELD["pending"]:
        _HELD["pending"] = False
        raise KeyboardInterrupt
