"""Data-parallel training over MPI (extra `distributed`: mpi4py and the mpich wheel's mpiexec).

`fit` run by N processes under `mpiexec` (or `onnxkit train --workers N`, see `launch`) trains
one model on N workers:

- Rank 0 alone writes the run folder; the others write into a private scratch copy that rank 0
  fills with the files a session opens from (its artifacts, with the initial weights, and on
  resume its checkpoint), so every rank starts from rank 0's weights.
- `DataParallelSession` wraps the backend's session: each rank runs its contiguous share of every
  global batch (`batch_size` stays the global batch); between backward and the optimizer step
  the gradients, weighted by each rank's share of the batch, and the BatchNorm buffers go through
  one all-reduce as one flat buffer, as a mean (the buffers' over the ranks that had rows; besides
  it, each batch's loss and the stop flag are one-number all-reduces). Validation batches are split
  the same way and gathered. So N workers compute what one process computes, up to float
  rounding; each rank draws its own dropout masks.
- `StopTogether` makes a Ctrl-C or SIGTERM that reached any rank stop every rank after the
  same optimizer step.
- A rank that raises aborts the whole job (`MPI_Abort`) after reporting its error; a collective
  inside the loop that waits longer than $ONNXKIT_WORKER_TIMEOUT seconds (default 30) aborts
  too, so a dead or hung rank never leaves the others waiting. (mpiexec itself ends the job
  within about a second when a rank dies.) Checkpoints are atomic files: an abort never leaves
  one half-written.
- Started by `launch`, each rank watches the launcher and stops as after a SIGTERM when it dies
  (kill -9, a closed terminal), so no rank trains on with nobody to report to.

mpi4py is imported only when the environment says the process is one of several MPI ranks.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar, runtime_checkable

import numpy as np

from onnxkit.errors import OnnxkitError
from onnxkit.mpi_environment import local_rank, size
from onnxkit.train.backend import TrainingSession
from onnxkit.train.callbacks import Callback
from onnxkit.train.config import TrainingInterrupted
from onnxkit.train.run_directory import RunDirectory

if TYPE_CHECKING:
    from onnxkit.train.trainer import Trainer

TIMEOUT_VARIABLE = "ONNXKIT_WORKER_TIMEOUT"
ERRORS_VARIABLE = "ONNXKIT_WORKER_ERRORS"  # a file the first failing rank writes its error to (set by `launch`)
LAUNCHER_VARIABLE = "ONNXKIT_LAUNCHER_PID"  # the process whose death stops the ranks (set by `launch`)
DEFAULT_TIMEOUT = 30.0
BROADCAST_POLL_S = 0.01  # how often a rank waiting for rank 0's broadcast looks
INSTALL = "pip install 'onnxkit[distributed]' (mpi4py and the mpich wheel, which brings mpiexec)"

F = TypeVar("F", bound=Callable[..., Any])


def worker_timeout() -> float:
    """Seconds a collective waits for the other workers: $ONNXKIT_WORKER_TIMEOUT, else 30."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:
        raise OnnxkitError(f"${TIMEOUT_VARIABLE} must be the seconds a worker waits for the others, above 0; got "
                           f"{text!r} (unset it for {DEFAULT_TIMEOUT:.0f})")
    return seconds


def smallest_share(rows: int) -> int:
    """The fewest rows of a batch of `rows` a rank takes (`shard`): all of them when this process runs alone."""
    return rows // size()


def rank_device(device: str, local_rank: int, gpus: int) -> str:
    """The device a rank trains on. `cuda` without an index (and `auto`, when `gpus` > 0 CUDA GPUs
    are usable) becomes `cuda:(local_rank % gpus)`, so the ranks on a machine spread over its
    GPUs; `cpu`, an explicit `cuda:N` and anything else stay as given."""
    if device.lower() in ("cuda", "auto") and gpus > 0:
        return f"cuda:{local_rank % gpus}"
    return device


def _usable_gpus() -> int:
    """The GPUs the driver shows where onnxruntime has CUDA support, else 0."""
    from onnxkit.runtime.session import gpu_count, ort

    return gpu_count() if "CUDAExecutionProvider" in ort.get_available_providers() else 0


def check_backend(name: str) -> None:
    """Refuse a training backend whose sessions cannot set gradients, or that does not load here (ort-training
    without its package: installing it would only lead to this refusal)."""
    from onnxkit.train.backends import DEFAULT, backend_names, get_backend

    try:
        sets_gradients = get_backend(name).sets_gradients
    except OnnxkitError:
        if name == DEFAULT or name not in backend_names():
            raise
        sets_gradients = False
    if not sets_gradients:
        raise OnnxkitError(f"the {name} backend cannot set gradients, which data-parallel training needs; "
                           "train on several workers with --backend onnx, or on one without --workers")


@functools.cache
def current_world() -> World | None:
    """The MPI world this process is a rank of, or None when it runs alone."""
    ranks = size()
    if ranks <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise OnnxkitError(f"this process is one of {ranks} MPI ranks but mpi4py is not installed; {INSTALL}") from None
    return World(MPI.COMM_WORLD)


def fails_together(function: F) -> F:
    """Run `function` so that an exception on any rank ends every rank (see `World.failing_together`)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        world = current_world()
        if world is None:
            return function(*args, **kwargs)
        with world.failing_together():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _process_handle(pid: str) -> int | None:
    """A pidfd of process `pid`, readable once it has ended (a closed pipe's when it had already; None: no pid,
    or no pidfds here)."""
    if not pid.isdigit() or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(int(pid))
    except ProcessLookupError:
        ended, write = os.pipe()
        os.close(write)
        return ended
    except OSError:  # a kernel before 5.3
        return None


def shard(rows: int, rank: int, size: int, batch_size: int | None = None) -> tuple[int, int]:
    """Rows [lo, hi) of a batch of `rows` that `rank` of `size` takes: its contiguous part of a batch of
    `batch_size` (default `rows`) cut into parts whose sizes differ by at most 1, ending at `rows`. So a
    short last batch is cut where a full one is: as one process cuts it into micro-batches of
    batch_size / size (`--grad-accum`), the last ranks' parts short or empty."""
    full = rows if batch_size is None else batch_size
    return min(rank * full // size, rows), min((rank + 1) * full // size, rows)


class World:
    """This rank's view of the MPI job: rank, size, collectives that time out, abort."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self.comm, self.rank, self.size, self._mpi = comm, comm.Get_rank(), comm.Get_size(), MPI
        self.timeout = worker_timeout()
        self._deadline: float | None = None
        self._waiting_for = ""
        self._watchdog: threading.Thread | None = None
        self._scratch: tuple[Path, Path] | None = None  # on ranks but 0: (their scratch run, rank 0's run)
        self._scratch_folder: Path | None = None  # on ranks but 0: the folder of their scratch run
        self._launcher_died = False
        self._launcher = _process_handle(os.environ.get(LAUNCHER_VARIABLE, ""))
        self._launcher_lock = threading.Lock()  # the watchdog and the exit both look
        atexit.register(self._clean_up)
        if self._launcher is not None:
            self._start_watchdog()

    # ---- failing together ----------------------------------------------------------------

    def abort(self, message: str, params: Sequence[str] = ()) -> NoReturn:
        """Report `message` (to the launcher's error file, with the library parameters it names, `params`, which
        the command writes as its flags; else to stderr) and end every rank."""
        path = os.environ.get(ERRORS_VARIABLE)
        text = f"worker {self.rank} of {self.size}: {message}"
        if self.rank:
            time.sleep(1)  # an error every rank meets reads best from rank 0, whose paths are the user's
        try:
            with open(path, "x", encoding="utf-8") if path else contextlib.nullcontext(sys.stderr) as out:
                out.write(json.dumps({"error": text, "params": list(params)}) if path else f"error: {text}\n")
        except FileExistsError:
            pass  # another rank reported first
        sys.stderr.flush()
        self._clean_up()  # MPI_Abort ends the process without its atexit functions
        self.comm.Abort(1)
        os._exit(1)  # Abort does not return; this only guards against an MPI that lets it

    @contextlib.contextmanager
    def failing_together(self) -> Iterator[None]:
        """Any exception but an agreed stop (TrainingInterrupted) aborts the job, so no rank waits for it. A stop
        names rank 0's run and checkpoint on every rank, not another rank's scratch copy (gone as it exits)."""
        try:
            yield
        except TrainingInterrupted as stop:
            if self._scratch is None or not stop.run_dir.is_relative_to(self._scratch[0]):
                raise
            scratch, run = self._scratch
            raise TrainingInterrupted(run, run / stop.checkpoint.relative_to(scratch), stop.epoch, stop.step,
                                      stop.signum) from None
        except BaseException as e:  # noqa: BLE001 - every failure must end all ranks
            if not isinstance(e, OnnxkitError | KeyboardInterrupt | SystemExit):
                traceback.print_exc()
            self.abort(str(e) or type(e).__name__, e.params if isinstance(e, OnnxkitError) else ())

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Abort when the collective inside takes longer than the timeout: a peer died or hangs."""
        self._start_watchdog()
        self._waiting_for, self._deadline = what, time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._deadline = None

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="onnxkit-worker-watchdog", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        """Every half second: once the launcher has died, a SIGTERM to this rank, which stops its training (the
        launcher's folder then removed by the last rank out, `_clean_up`); an abort once a collective has waited
        past its deadline. A rank with no SIGTERM handler (outside `onnxkit train` and outside `fit`'s training: a
        script's own code, after fit) is left to end on its own: the signal's default action ended it with no
        cleanup, and MPICH's mpiexec, seeing a rank die of a signal (or exit without MPI_Finalize), SIGKILLs the
        others at once, which took rank 1's scratch folder past its cleanup, or rank 0 in its last writes."""
        while True:
            time.sleep(0.5)
            # SIG_DFL: a script's own code (above)
            if self._see_launcher_death() and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGTERM)
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                self.abort(f"waited more than {self.timeout:.0f} s for the other workers ({self._waiting_for}): "
                           f"one of them died or hangs (set ${TIMEOUT_VARIABLE} to wait longer)")

    def _see_launcher_death(self) -> bool:
        """True the one time this rank sees that its launcher has died (never where it has none to watch)."""
        with self._launcher_lock:
            if self._launcher is None or not select.select([self._launcher], [], [], 0)[0]:
                return False
            os.close(self._launcher)
            self._launcher, self._launcher_died = None, True
            return True

    def _clean_up(self) -> None:
        """Remove this rank's scratch folder; once the launcher has died, also its files, and its folder when this
        rank is the last out (the folder is empty then). No rank removes another's scratch folder: rank 0, out
        first, removed the whole launcher folder while rank 1 was still writing there (one full test run in six
        left rank 1's scratch behind)."""
        if self._scratch_folder is not None:
            shutil.rmtree(self._scratch_folder, ignore_errors=True)
        self._see_launcher_death()  # a rank may stop with the others before its own watchdog has seen it
        if self._launcher_died and (errors := os.environ.get(ERRORS_VARIABLE)):
            folder = Path(errors).parent
            with contextlib.suppress(OSError):
                for entry in folder.iterdir():
                    if not entry.is_dir():
                        entry.unlink(missing_ok=True)
                folder.rmdir()

    # ---- collectives ---------------------------------------------------------------------

    def allreduce(self, values: np.ndarray, what: str, *, op: str = "sum") -> np.ndarray:
        """`values` summed (or maxed) over all ranks, in place."""
        with self._guard(what):
            self.comm.Allreduce(self._mpi.IN_PLACE, values, op=self._mpi.SUM if op == "sum" else self._mpi.MAX)
        return values

    def allgather(self, value: Any, what: str) -> list[Any]:
        with self._guard(what):
            return self.comm.allgather(value)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank; not timed (rank 0 may build artifacts meanwhile). The others wait for
        rank 0 in a loop, not in MPI's blocking call, which kept a Ctrl-C from their Python handlers: stopped by
        it before it got here, rank 0 ended, and a rank waiting for it spun forever."""
        arrived = self.comm.Ibarrier()
        while not arrived.Test():
            time.sleep(BROADCAST_POLL_S)
        return self.comm.bcast(value, root=0)

    # ---- the run folder ------------------------------------------------------------------

    def enter(
        self, out_dir: Any, resume: Any, backend: str | None, threads: int | None, quiet: bool, device: str
    ) -> tuple[Any, Any, int, bool, str]:
        """fit's arguments for this rank: ranks other than 0 train in a private scratch copy of the
        run (on resume, filled with rank 0's files), quietly; threads default to cores / ranks; a
        `cuda` (or `auto`) device becomes this rank's GPU (`rank_device`)."""
        if self.rank == 0:
            name = backend or (_stored_backend(resume) if resume else None)
            failure = None
            try:
                from onnxkit.train.backends import default_backend

                check_backend(name or default_backend())
            except OnnxkitError as e:
                failure = str(e)
            files = _read_files(Path(resume), RunDirectory(resume).resume_files()) if resume and failure is None else {}
            self.broadcast((failure, files))
            if failure:
                raise OnnxkitError(failure)
        else:
            failure, files = self.broadcast(None)
            if failure:
                raise OnnxkitError(failure)
            launcher = os.environ.get(ERRORS_VARIABLE)  # in the launcher's folder, gone however this rank ends
            self._scratch_folder = Path(tempfile.mkdtemp(prefix=f"onnxkit-worker{self.rank}-",
                                                         dir=launcher and Path(launcher).parent))
            scratch = self._scratch_folder / "run"
            _write_files(scratch, files)
            if (run := resume if resume is not None else out_dir) is not None:
                self._scratch = scratch, Path(run)
            out_dir = scratch if out_dir is not None else None
            resume = scratch if resume is not None else None
            quiet = True
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if device.lower() in ("cuda", "auto"):
            device = rank_device(device, local_rank(), _usable_gpus())
        return out_dir, resume, threads or max(1, cores // self.size), quiet, device

    def open_session(self, setup: Any, resuming: bool) -> DataParallelSession:
        """Rank 0 opens (for a new run: builds) fit's session, then sends its artifacts to the others,
        which open theirs on them: every rank starts from rank 0's initial weights or checkpoint."""
        if self.rank == 0:
            try:
                session = setup.open_session(resuming)
            except BaseException as e:
                self.broadcast((str(e), {}))
                raise
            self.broadcast((None, {} if resuming else _read_files(setup.run.path, ["artifacts"])))
        else:
            failure, files = self.broadcast(None)
            if failure is not None:
                raise OnnxkitError(f"worker 0 could not open the training session: {failure}")
            _write_files(setup.run.path, files)
            session = setup.open_session(True) if resuming else setup.backend.open(
                setup.run.artifacts, device=setup.device, threads=setup.threads)
        return DataParallelSession(session, self, setup.config.batch_size)


def _stored_backend(resume: Any) -> str | None:
    import json

    try:
        return json.loads((Path(resume) / "run.json").read_text())["config"]["backend"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # fit reports the damaged run itself


def _read_files(root: Path, names: Any) -> dict[str, bytes]:
    """The bytes of the files `names` (relative to `root`; a folder stands for every file in it)."""
    files = {}
    for name in names:
        path = root / name
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] * path.is_file()
        files.update({str(p.relative_to(root)): p.read_bytes() for p in found})
    return files


def _write_files(root: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    root.mkdir(parents=True, exist_ok=True)


@runtime_checkable
class DataParallelHooks(Protocol):
    """What data-parallel training needs beyond `TrainingSession` (the onnx backend's session has it)."""

    def flat_gradient(self) -> np.ndarray: ...

    def set_flat_gradient(self, gradient: np.ndarray) -> None: ...

    def set_dropout_stream(self, stream: int) -> None: ...


class DataParallelSession(TrainingSession):
    """A backend session on one rank's share of every batch, gradients and buffers averaged over ranks."""

    weighs_batches = True

    def __init__(self, session: TrainingSession, world: World, batch_size: int) -> None:
        if not isinstance(session, DataParallelHooks):
            raise OnnxkitError(f"the {type(session).__name__} has no flat gradient to all-reduce; use the onnx backend")
        self.session, self.flat, self.world, self.batch_size = session, session, world, batch_size
        session.set_dropout_stream(world.rank)  # ranks drop different units of their rows, as one process would
        self._had_rows = False  # whether this rank's shares since the last optimizer step had rows

    def _share(self, rows: int) -> tuple[slice, float]:
        """This rank's rows of a batch and its gradient weight (size x its share of the rows); an empty
        share runs one row with weight 0, so every rank takes every step."""
        lo, hi = shard(rows, self.world.rank, self.world.size, self.batch_size)
        if hi == lo:
            return slice(0, 1), 0.0
        return slice(lo, hi), self.world.size * (hi - lo) / rows

    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, weight: float = 1.0) -> float:
        part, share = self._share(len(labels))
        kept = None if share else self.session.buffers()  # the one row of an empty share updates no statistics
        loss = self.session.train_step({k: v[part] for k, v in feeds.items()}, labels[part], share * weight)
        if kept:
            self.session.set_buffers(kept)
        self._had_rows = self._had_rows or bool(share)
        mean = np.array([loss * share / self.world.size if share else 0.0])
        return float(self.world.allreduce(mean, "the loss of a batch")[0])

    def optimizer_step(self, lr: float) -> None:
        """All-reduce the gradients (their mean over the ranks: each is weighted by its rows already) and the
        buffers, as the mean over the ranks that had rows since the last step (the last number counts them),
        then step."""
        session = self.session
        gradient = self.flat.flat_gradient()
        buffers = session.buffers()
        had = np.float32(self._had_rows)
        flat = np.concatenate([gradient, *(had * v.reshape(-1).astype(np.float32) for v in buffers.values()),
                               np.array([had], np.float32)])
        flat = self.world.allreduce(flat, "the gradient all-reduce")
        self.flat.set_flat_gradient(flat[: gradient.size] / self.world.size)
        if buffers:
            offset, means = gradient.size, {}
            for name, value in buffers.items():  # some rank had rows: the count is at least 1
                means[name] = flat[offset : offset + value.size].reshape(value.shape) / flat[-1]
                offset += value.size
            session.set_buffers(means)
        session.optimizer_step(lr)
        self._had_rows = False

    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        rows = len(next(iter(feeds.values())))
        lo, hi = shard(rows, self.world.rank, self.world.size)
        mine = self.session.eval_step({k: v[lo:hi] for k, v in feeds.items()}) if hi > lo else None
        parts = self.world.allgather(mine, "a validation batch")
        return np.concatenate([p for p in parts if p is not None])

    def parameters(self) -> dict[str, np.ndarray]:
        return self.session.parameters()

    def gradients(self) -> dict[str, np.ndarray]:
        return self.session.gradients()

    def set_gradients(self, gradients: Mapping[str, np.ndarray]) -> None:
        self.session.set_gradients(gradients)

    def buffers(self) -> dict[str, np.ndarray]:
        return self.session.buffers()

    def set_buffers(self, values: Mapping[str, np.ndarray]) -> None:
        self.session.set_buffers(values)

    @property
    def steps(self) -> int:
        return self.session.steps

    def save_checkpoint(self, path: Path, *, optimizer_state: bool = True) -> None:
        self.session.save_checkpoint(path, optimizer_state=optimizer_state)


class StopTogether(Callback):
    """After every optimizer step and every epoch, the ranks agree whether any got Ctrl-C or SIGTERM or had
    a callback ask to stop, so all stop (and rank 0 checkpoints) after the same step: the loop stops on
    the agreement (`Trainer.agreed_stop`), not on a signal that reached one rank after it."""

    def __init__(self, world: World) -> None:
        self.world = world

    def on_train_begin(self, trainer: Trainer) -> None:
        trainer.agreed_stop = False

    def on_step_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._agree(trainer)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self._agree(trainer)

    def _agree(self, trainer: Trainer) -> None:
        asked = np.array([trainer.stop_signal, trainer.stop_training], np.int64)
        signum, stop = self.world.allreduce(asked, "a stop request", op="max")
        if signum and not trainer.stop_signal:
            trainer.request_stop(int(signum))
        trainer.agreed_stop, trainer.stop_training = bool(signum), bool(stop)
