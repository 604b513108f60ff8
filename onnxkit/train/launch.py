"""`onnxkit train --workers N`: the same command as N MPI ranks, started by this environment's
own mpiexec (the mpich wheel puts it beside the Python executable).

mpiexec runs in a process group of its own, so a Ctrl-C reaches it once, from here: it forwards
it to every rank, which stop after the same optimizer step (rank 0 checkpoints). The ranks watch
this process (its pid in $ONNXKIT_LAUNCHER_PID) and stop the same way when it dies (kill -9, a
closed terminal; Linux), instead of training on with nobody to report to. (A parent-death signal
to mpiexec came once for each thread of the dying process, and the ranks, stopping after the
first SIGTERM, died of the second before rank 0 had checkpointed.) Their output goes to files
that this process copies to its own as it comes, so its death fails no write (a pipe's would
make mpiexec end the ranks before rank 0 has checkpointed). The first rank
that fails writes its error to a file whose path the ranks find in $ONNXKIT_WORKER_ERRORS, and
that error is raised here; a rank that dies without a word (killed) makes mpiexec end the
others, and the error says so; an mpiexec that fails by itself (a bad HYDRA_* setting) is reported by its own
first error line. mpiexec's own banner about it is left out of the relayed output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from onnxkit.errors import OnnxkitError
from onnxkit.signals import handled
from onnxkit.train.distributed import ERRORS_VARIABLE, INSTALL, LAUNCHER_VARIABLE, worker_timeout
from onnxkit.train.progress import TERMINAL_VARIABLE
from onnxkit.train.run_directory import RunDirectory

INTERRUPTED = (128 + signal.SIGINT, 128 + signal.SIGTERM)
MPIEXEC_NOISE = re.compile(  # mpiexec's banners, and MPI's error stack of a rank whose peer died
    r"^(=+|=   .*|YOUR APPLICATION TERMINATED.*|This typically refers to a problem.*|Please see the FAQ page.*"
    r"|\[mpiexec@.*|\[proxy:.*|Ctrl-C caught\.\.\. cleaning up processes"
    r"|Abort\(\d+\) on node \d+ .*|\w+\(\d+\)\.*: .*)$"
)
BANNER_RULE = re.compile(r"^=+$")  # the first line of mpiexec's banner about a rank that died, after a blank one
STOPPED = re.compile(r"^error: stopped by SIG[A-Z]+$")  # a rank's last line when a stop ended it
MPIEXEC_FAILURE = re.compile(r"^\[mpiexec@[^]]*\] \S+ \([^)]*\): (.+)$")  # "[mpiexec@host] FUNC (FILE:LINE): what"
MPIEXEC_OWN_FAILURE = 255  # Hydra's exit status when it could not start or run the job (a killed rank's is its signal)
RELAY_POLL_S = 0.05  # how often the ranks' output is looked for
STOP_GRACE_S = 20.0  # after a Ctrl-C or SIGTERM, how long the ranks get to checkpoint and stop before they are killed
TOPOLOGY_VARIABLE = "HWLOC_XMLFILE"  # where hwloc, inside mpiexec and each rank, reads the machine's topology
OVERSUBSCRIPTION = 4  # workers per core past which --workers is refused (8 on 2 cores still train; 1000 did not start)


def find_mpiexec() -> str:
    """The mpiexec of this environment (beside sys.executable), else one on PATH."""
    if importlib.util.find_spec("mpi4py") is None:
        raise OnnxkitError(f"--workers needs mpi4py; {INSTALL}")
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if not found:
        raise OnnxkitError(f"no mpiexec beside {sys.executable} or on PATH; {INSTALL}")
    return found


def launch(workers: int, arguments: Sequence[str], *, run_dir: str | os.PathLike | None = None,
           new_run: bool = False) -> int:
    """Run `python ARGUMENTS` as `workers` MPI ranks, relaying their output.

    Returns 0, or 130 / 143 when Ctrl-C or SIGTERM stopped them; raises OnnxkitError with the
    failing rank's message, or saying a rank died (and where the last checkpoint of `run_dir` is).
    A `new_run` in `run_dir` that fails before it began leaves nothing it made there
    (`RunDirectory.discard_unbegun`).
    """
    run = RunDirectory(run_dir) if new_run and run_dir is not None else None
    before = run.entries() if run else None
    code = 1
    try:
        code = _launch(workers, arguments, run_dir)
        return code
    finally:
        if run and code:
            run.discard_unbegun(before)


def _launch(workers: int, arguments: Sequence[str], run_dir: str | os.PathLike | None) -> int:
    if workers < 1:
        raise OnnxkitError(f"--workers must be at least 1, got {workers}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > OVERSUBSCRIPTION * cores:  # each is a process with its own session, all on this machine
        raise OnnxkitError(f"{workers} workers on this machine's {cores} cores would only compete for them (and "
                           f"for memory); use {cores}, one a core ({OVERSUBSCRIPTION * cores} at most), or run ranks "
                           "across machines with mpiexec -n N "
                           "onnxkit train ... (its own host options)")
    worker_timeout()  # a bad $ONNXKIT_WORKER_TIMEOUT is one error here, not one traceback a rank
    mpiexec = find_mpiexec()
    command = [mpiexec, "-n", str(workers), sys.executable, *arguments]
    with tempfile.TemporaryDirectory(prefix="onnxkit-workers-") as folder:
        errors = Path(folder) / "error.txt"
        # the ranks' output goes to files this process relays: were it killed, writes to a pipe it read would
        # fail, and mpiexec would end the ranks at once, before rank 0 had checkpointed
        logs = [Path(folder) / "stdout.txt", Path(folder) / "stderr.txt"]
        with open(logs[0], "wb") as out, open(logs[1], "wb") as err:
            environment = {**os.environ, ERRORS_VARIABLE: str(errors), LAUNCHER_VARIABLE: str(os.getpid()),
                           TERMINAL_VARIABLE: str(int(sys.stderr.isatty()))}  # rank 0's progress bar
            if (Path(mpiexec).parent / "hydra_pmi_proxy").is_file():  # MPICH's Hydra (the mpich wheel's)
                # Hydra exports the machine's topology to /tmp/hydra_hwloc_xmlfile_* for its ranks unless this is
                # set, and leaves that file behind whenever a rank calls MPI_Abort (a failing worker): a path that
                # does not exist makes each process find the topology itself, as a rank started without mpiexec does
                environment.setdefault(TOPOLOGY_VARIABLE, str(Path(folder) / "no-topology.xml"))
            process = subprocess.Popen(command, env=environment, stdout=out, stderr=err, start_new_session=True)
        code, stopped_by, mpiexec_error = _wait_relaying(process, logs)
        if code == 0:
            return 0
        if stopped_by is not None:  # the ranks stopped as asked; rank 0 said where it checkpointed, if it had begun
            if run_dir is None or not _recorded_a_stop(run_dir):
                sys.stderr.write(f"error: stopped by {signal.Signals(stopped_by).name}\n")
            return 128 + stopped_by
        if errors.is_file():
            report = json.loads(errors.read_text(encoding="utf-8"))
            raise OnnxkitError(report["error"], params=report["params"])
        if code == MPIEXEC_OWN_FAILURE and mpiexec_error:
            raise OnnxkitError(f"mpiexec could not run the workers: {mpiexec_error}; check the MPI settings of this "
                               "environment (HYDRA_* and MPIEXEC_* variables), or run without --workers")
    if code in INTERRUPTED and _recorded_a_stop(run_dir):  # a signal sent to the ranks themselves
        return code
    raise OnnxkitError(f"a worker stopped without reporting an error (mpiexec exit status {code}: killed, or out of "
                       f"memory); every worker was stopped. {_checkpoint_note(run_dir, workers)}")


def launch_training(workers: int, run_dir: str, backend: str | None, resume: bool = False) -> int:
    """`onnxkit train ... --workers N`: this command line without --workers, as N ranks (see `launch`), a new run
    in `run_dir`; `backend` (None: the default, or on `resume` the stored one, which the ranks check) must set
    gradients."""
    from onnxkit.train.backends import default_backend
    from onnxkit.train.distributed import check_backend, current_world

    if current_world() is not None:
        raise OnnxkitError("--workers starts mpiexec itself; under mpiexec, leave it out")
    arguments = _without_workers(sys.argv[1:])
    if not resume:  # in the folder train chose (with no -o, each rank would choose one of its own)
        arguments += ["-o", run_dir]
    if "train" not in arguments:
        raise OnnxkitError("--workers re-runs the onnxkit command line; from Python, run your script with "
                           "mpiexec -n N python SCRIPT (fit detects the MPI world)")
    check_backend(backend or default_backend())  # a backend that cannot take part says so before mpi4py is asked for
    find_mpiexec()
    return launch(workers, ["-m", "onnxkit", *arguments], run_dir=run_dir, new_run=not resume)


def _without_workers(arguments: Sequence[str]) -> list[str]:
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--workers":
            skip = True
        elif not argument.startswith("--workers="):
            kept.append(argument)
    return kept


def _recorded_a_stop(run_dir: str | os.PathLike | None) -> bool:
    """Whether the run stopped as asked (rank 0 recorded it as interrupted): mpiexec also exits 143 when a rank
    died and MPI ended the others."""
    if run_dir is None:
        return True
    try:
        return RunDirectory(run_dir).read_json().get("status") == "interrupted"
    except OnnxkitError:
        return False


def _checkpoint_note(run_dir: str | os.PathLike | None, workers: int) -> str:
    if run_dir is None:
        return "Checkpoints are written atomically, so the last one is intact."
    run = RunDirectory(run_dir)
    if not run.has_checkpoint():
        return f"No checkpoint had been written in {run_dir} yet; start the run again."
    checkpoint = run.last_checkpoint
    return f"The last checkpoint, {checkpoint}, is intact; continue with: onnxkit train --resume {run_dir} " \
           f"--workers {workers}"


def _kill_job(process: subprocess.Popen) -> None:
    """End mpiexec and its ranks (its own session) at once."""
    sys.stderr.write(f"warning: the workers had not stopped {STOP_GRACE_S:.0f} s after the stop; killing them\n")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _Relay:
    """The lines mpiexec writes to a file, copied to one of our streams as they come, without its banner (and the
    blank line before it); once the launcher has passed a stop on (`stopping`), without the ranks' "error: stopped
    by ..." lines either, since it says so itself (each rank and the launcher wrote one), nor blank lines (click's,
    before each of those, and a rank's cut short by mpiexec ending it). The first error mpiexec itself reported is
    kept in `mpiexec_error`."""

    def __init__(self, log: Path, target: IO[str]) -> None:
        self.source, self.target, self.pending = open(log, "rb"), target, b""  # noqa: SIM115 - closed by close()
        self.mpiexec_error = ""

    def pump(self, ended: bool, stopping: bool = False) -> None:
        *lines, self.pending = (self.pending + self.source.read()).split(b"\n")
        if ended and self.pending:  # a last line without its newline
            lines.append(self.pending)
        elif not ended and lines and not lines[-1] and not self.pending:
            self.pending = b"\n" + lines.pop()  # a blank line, kept until the next line shows what follows it
        text = [raw.decode("utf-8", "replace") for raw in lines]
        for k, line in enumerate(text):
            following = text[k + 1] if k + 1 < len(text) else ""
            if (stopping and (not line or STOPPED.match(line))) or (not line and BANNER_RULE.match(following)):
                continue
            if not MPIEXEC_NOISE.match(line):
                self._write(line + "\n")
            elif not self.mpiexec_error and (failure := MPIEXEC_FAILURE.match(line)):
                self.mpiexec_error = failure.group(1)
        drawn, mark, last = self.pending.rpartition(b"\r")
        if drawn and not ended:  # rank 0's progress bar, redrawn up to its last drawing (which may be half-written)
            self._write(drawn.decode("utf-8", "replace"))
            self.pending = mark + last

    def _write(self, text: str) -> None:
        self.target.write(text)
        self.target.flush()

    def close(self) -> None:
        self.source.close()


def _wait_relaying(process: subprocess.Popen, logs: Sequence[Path]) -> tuple[int, int | None, str]:
    """Wait for mpiexec, relaying what it writes to `logs` (stdout, stderr) and passing it each Ctrl-C or
    SIGTERM this process gets (a second Ctrl-C ends it at once); return its exit status, the first signal
    passed on, if any (mpiexec's status alone does not tell a stop from a rank's death: it exits 143 for both),
    and the first error mpiexec itself reported ("" if none)."""
    pumps = [_Relay(log, target) for log, target in zip(logs, (sys.stdout, sys.stderr), strict=True)]
    relayed: list[tuple[int, float]] = []  # each signal passed on, and when

    def relay(signum: int, frame: object) -> None:
        relayed.append((signum, time.monotonic()))
        process.send_signal(signum)

    try:
        with handled(relay):
            while True:
                ended = process.poll() is not None  # before reading: all it wrote is then in the files
                for pump in reversed(pumps):  # stderr first: progress comes before train's last line, on stdout
                    pump.pump(ended, stopping=bool(relayed))
                if ended:
                    return (int(process.returncode), relayed[0][0] if relayed else None,
                            next((p.mpiexec_error for p in pumps if p.mpiexec_error), ""))
                if relayed and time.monotonic() - relayed[0][1] > STOP_GRACE_S:
                    _kill_job(process)  # a rank the stop caught starting up left another waiting in MPI_Init
                time.sleep(RELAY_POLL_S)
    finally:
        for pump in pumps:
            pump.close()
