"""Dynamic batching: concurrent requests for one model merged into one session run.

Each model has a worker task on the event loop and one thread that runs the
session, so a long run never blocks the loop. A run expected to take less than
`INLINE_RUN_S` (from the model's measured time per row) runs on the loop instead:
handing it to the thread and back would cost more than the run. While a run is in progress, new
requests queue up; the next run takes every queued request whose non-batch
shapes match, up to `max_batch_size` rows, if the model answers each row on its own
(`Model.rows_out`: the outputs are split back by row); else each request runs alone. After the first request of a batch
arrives, the worker waits up to `max_delay` for more, but only while other
requests are still being received: a lone client is never made to wait. Before each run,
the loop makes one pass, so requests whose bytes have already arrived join it: at 32
clients on digits-mlp, one batch of 32 instead of two alternating halves of 16.

Each request runs on the model it was decoded for: assigning a new `model` (hot reload)
makes later requests use it while queued ones finish on the old one, and requests of two
models are never merged. Past `max_queue` waiting requests, new ones are refused (503).
Each batcher keeps its model's inference statistics (`statistics`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from onnxkit.runtime import Model
from onnxkit.runtime.session import error_reason, raised_by_onnxruntime
from onnxkit.serve.limits import CLIENT_CLOSED, CLIENT_LEFT, WAITING, ClientGone
from onnxkit.serve.metrics import Metrics
from onnxkit.serve.protocol import RequestError
from onnxkit.serve.statistics import ModelStatistics

STOPPING = "the server is stopping; retry (on another server, or on this one once it is back)"
INLINE_RUN_S = 200e-6
OFF_LOOP_S = 0.05  # a run on the loop this long: the model's time follows its data, and it never runs there again
PIECE_VALUES = 1 << 15  # input values per run of a request bigger than a batch (see _timed_run)


@dataclass(slots=True)
class _Pending:
    model: Model
    feeds: dict[str, np.ndarray]
    rows: int
    key: tuple | None  # requests with equal keys can be concatenated; None: run alone
    future: asyncio.Future
    since: float


class Batcher:
    """Queues requests for one model and runs them in merged batches."""

    def __init__(
        self,
        model: Model,
        metrics: Metrics,
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        max_queue: int = 256,
    ) -> None:
        self.name = model.name
        self.model: Model | None = model  # None while unloaded (the model repository's unload)
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000
        self.max_queue = max_queue
        self.statistics = ModelStatistics()
        self._queue: deque[_Pending] = deque()
        self._receiving = 0  # requests whose bodies are still being read or decoded
        self._wakeup = asyncio.Event()
        self._seconds_per_row: weakref.WeakKeyDictionary[Model, float] = weakref.WeakKeyDictionary()
        self._off_loop: weakref.WeakSet[Model] = weakref.WeakSet()  # models whose runs never go on the loop
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"onnxkit-{model.name}")
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: list[_Pending] = []  # the batch onnxruntime is running

    def start(self) -> None:
        # kept: asyncio.get_running_loop() costs a getpid() system call each time, several µs in some sandboxes
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker, fail what is still queued, and let a run in progress finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            _settle(pending.future, error=RequestError(503, "the server is shutting down"))
        self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """The server stops without waiting any longer: answer what is queued or running with a 503 now (a run in
        progress finishes unseen)."""
        stopping = RequestError(503, STOPPING)
        for pending in [*self._running, *self._queue]:
            _settle(pending.future, error=stopping)  # the worker drops them unrun (a batch skips settled requests)

    def receiving(self) -> None:
        """A request for this model has arrived and is being read: worth waiting for."""
        self._receiving += 1

    def received(self) -> None:
        """That request has been queued or refused."""
        self._receiving -= 1
        if self._receiving == 0:  # a batch held for it need wait no longer
            self._wakeup.set()

    async def infer(self, feeds: dict[str, np.ndarray], model: Model | None = None,
                    scope: dict | None = None) -> dict[str, np.ndarray]:
        """Queue feeds checked by `model` (default: the current one; see `Model.prepare`) and wait for its outputs.

        RequestError(503) when `max_queue` requests are already waiting. With an HTTP request's ASGI `scope`,
        the request's future waits there under `WAITING`, for the protocol to fail with `ClientGone` if the
        client leaves (or has left, while the request was decoded): the request is then dropped before it runs.
        """
        start = time.perf_counter_ns()
        if len(self._queue) >= self.max_queue:
            self.statistics.fail.add(time.perf_counter_ns() - start)
            raise RequestError(
                503, f"model {self.name!r} has {len(self._queue)} requests waiting (--max-queue); retry in a moment"
            )
        model = model or self.model
        rows = len(next(iter(feeds.values()))) if model.batchable else 0
        key = None
        if rows and model.rows_out:  # a request of no rows runs alone: its outputs have none to split
            key = (model, *[(name, a.dtype, a.shape[1:]) for name, a in feeds.items()])
        loop = self._loop
        assert loop is not None, "Batcher.start() first"
        pending = _Pending(model, feeds, rows, key, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._wakeup.set()
        if scope is not None:
            scope[WAITING] = pending.future
            if CLIENT_LEFT in scope:  # while its body was decoded: dropped as if it had left now
                pending.future.set_exception(ClientGone(CLIENT_CLOSED))
        try:
            outputs = await pending.future
        except Exception:  # a refusal, a client gone, or onnxkit's own bug
            self.statistics.fail.add(time.perf_counter_ns() - start)
            raise
        self.statistics.success.add(time.perf_counter_ns() - start)
        return outputs

    async def _work(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            self._wakeup.clear()
            if not self._queue:
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].since + self.max_delay
            if loop.time() < deadline and self._worth_waiting():
                await self._hold(deadline)
            await asyncio.sleep(0)  # one pass of the loop: requests already on their sockets join this batch
            batch = self._take_batch()
            now = loop.time()
            for pending in batch:
                self.statistics.queue.add(round((now - pending.since) * 1e9))
            try:
                await self._run(batch)
            except Exception as e:  # onnxkit's bug: these requests fail (500, logged by the protocol), not the worker
                for pending in batch:
                    _settle(pending.future, error=e)
            finally:
                self._running = []

    async def _hold(self, deadline: float) -> None:
        """Wait while the batch is worth holding, until `deadline` on the loop's clock.

        One timer per batch; the wait ends when it fires, not when `loop.time()` reaches `deadline`:
        uvloop's clock and timers count whole milliseconds, so a timer can fire while `loop.time()`
        still reads just before its time, and a wait that then went on would have no timer left.
        """
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wakeup.set()

        timer = self._loop.call_at(deadline, expire)
        try:
            while not expired and self._worth_waiting():  # woken by the timer, a queued request or the last decode
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            timer.cancel()

    def _worth_waiting(self) -> bool:
        """True while the first request can be merged, more are on their way, and the batch is not full."""
        return (
            self._queue[0].key is not None
            and self._receiving > 0
            and sum(p.rows for p in self._queue) < self.max_batch_size
        )

    def _take_batch(self) -> list[_Pending]:
        first = self._queue.popleft()
        if first.key is None:
            return [first]
        batch, rows, rest = [first], first.rows, deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.key == first.key and rows + pending.rows <= self.max_batch_size:
                batch.append(pending)
                rows += pending.rows
            else:
                rest.append(pending)
        self._queue = rest
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        batch = [p for p in batch if not p.future.done()]  # drop requests whose client left
        if not batch:
            return
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in batch[0].feeds}
        model = batch[0].model
        rows = sum(p.rows for p in batch)
        counted = rows if model.batchable else len(batch)  # inferences the statistics count: no rows, none
        rows = rows or 1
        estimate = self._seconds_per_row.get(model)
        self._running = batch
        try:
            run = (model, feeds, rows, self.max_batch_size)
            if estimate is not None and estimate * rows < INLINE_RUN_S and model not in self._off_loop:
                cpu = time.thread_time()
                outputs, seconds = _timed_run(*run)
                # a Loop's trip count, a Tile's repeats: its cost came with its data, and the next such run would
                # hold every client as long (the CPU time it took too: not a run slowed by the machine's other work)
                if seconds > OFF_LOOP_S and time.thread_time() - cpu > OFF_LOOP_S / 2:
                    self._off_loop.add(model)
            else:
                outputs, seconds = await self._loop.run_in_executor(self._executor, _timed_run, *run)
        except Exception as e:
            if not raised_by_onnxruntime(e):
                raise  # not the input's fault
            if len(batch) > 1:  # find the request that fails, and serve the others
                for pending in batch:
                    await self._run([pending])
                return
            reason = error_reason(e)  # all of it in one line: the first could end mid-sentence ("for the following")
            _settle(batch[0].future, error=RequestError(400, f"model {self.name!r} failed on this input: {reason}"))
            return
        # runs are only ever slowed by other work on the CPUs: follow the fastest, rising 10% a run
        self._seconds_per_row[model] = min(seconds / rows, (estimate or float("inf")) * 1.1)
        self.metrics.record_batch(self.name, counted)
        self.statistics.ran(counted, seconds)
        if len(batch) == 1:
            _settle(batch[0].future, outputs)
            return
        if any(np.ndim(v) == 0 or len(v) != rows for v in outputs.values()):
            # outputs whose rows follow the data, not the input rows (as NonZero's), cannot be split: run each alone
            for pending in batch:
                await self._run([pending])
            return
        start = 0
        for pending in batch:
            part = {name: value[start : start + pending.rows] for name, value in outputs.items()}
            start += pending.rows
            _settle(pending.future, part)


def _timed_run(model: Model, feeds: dict[str, np.ndarray], rows: int,
               largest: int) -> tuple[dict[str, np.ndarray], float]:
    """The outputs and seconds of a batch. A request bigger than any batch (more than `largest` rows) runs in
    pieces of `_piece_rows`, so its memory is bounded whatever its rows (2,000,000 texts of a transformer in one
    run took 2.3 GB); one whose outputs have no row per input row runs whole, and gives back the memory it grew
    ONNX Runtime's arena by, which would stay otherwise."""
    start = time.perf_counter()
    size = _piece_rows(feeds, largest)
    if rows <= size or not model.rows_out:
        return model.run(feeds, release_memory=rows > largest), time.perf_counter() - start
    parts = []
    for first in range(0, rows, size):
        part = model.run({name: value[first:first + size] for name, value in feeds.items()})
        if any(np.ndim(v) == 0 or len(v) != min(size, rows - first) for v in part.values()):
            return model.run(feeds, release_memory=True), time.perf_counter() - start
        parts.append(part)
    outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return outputs, time.perf_counter() - start


def _piece_rows(feeds: dict[str, np.ndarray], largest: int) -> int:
    """Rows a run of a big request takes at a time: `largest` (the batch size), or as many as hold PIECE_VALUES
    input values when that is more (a run each 32 rows would slow a tiny model's large requests)."""
    per_row = max((v.size // len(v) for v in feeds.values() if np.ndim(v) and len(v)), default=1)
    return max(largest, PIECE_VALUES // max(per_row, 1))


def _settle(future: asyncio.Future, result: object = None, error: Exception | None = None) -> None:
    """Give a waiting request its outputs or error, unless its client has gone."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
