"""This process as one of several MPI ranks, from what its launcher put in the environment; imports nothing
heavy, so the command's exit can ask it too (`end_unjoined_rank`)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # set by MPICH's and Open MPI's launchers
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
# a rank's number among the ranks on its machine: MPICH's Hydra, PMI launchers, Open MPI
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "PMI_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK")


def _environment_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return default


def size() -> int:
    """The number of MPI ranks from the launcher's environment (1 outside MPI)."""
    return _environment_int(SIZE_VARIABLES, 1)


def rank() -> int:
    """This process's MPI rank from the launcher's environment (0 outside MPI)."""
    return _environment_int(RANK_VARIABLES, 0)


def local_rank() -> int:
    """This process's rank among the ranks on its machine, from the launcher's environment (else its rank)."""
    return _environment_int(LOCAL_RANK_VARIABLES, rank())


def end_unjoined_rank(signum: int) -> None:
    """A rank that a stop ends before it has joined the MPI world (mpi4py not imported) dies of `signum` instead of
    exiting: the ranks already inside MPI_Init wait for it there, deaf to their own stop, for as long as the job
    lasts, while mpiexec ends them all at once when a rank dies of a signal. Outside MPI this does nothing."""
    if size() > 1 and "mpi4py.MPI" not in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream: nothing left to say
                stream.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
