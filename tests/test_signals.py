"""Stop-signal handlers installed for a block and put back after it."""

from __future__ import annotations

import os
import signal
import threading

from onnxkit.signals import STOP_SIGNALS, handled, restore


def test_a_handler_answers_inside_the_block_and_the_previous_ones_come_back():
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    seen: list[int] = []
    with handled(lambda signum, frame: seen.append(signum)) as previous:
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] and previous == before
        restore(previous)  # early, as the trainer does after the first signal
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_the_block_restores_after_an_exception_and_changes_nothing_off_the_main_thread():
    before = signal.getsignal(signal.SIGINT)
    try:
        with handled(lambda signum, frame: None):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert signal.getsignal(signal.SIGINT) == before
    found: list[dict] = []
    worker = threading.Thread(target=lambda: found.append(handled(lambda s, f: None).__enter__()))
    worker.start()
    worker.join()
    assert found == [{}] and signal.getsignal(signal.SIGINT) == before
