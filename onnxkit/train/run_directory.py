"""The run directory: run.json, metrics.jsonl, checkpoints/, artifacts/, model.onnx, curves.svg.

A live run holds an exclusive `flock` on `run.lock`, so a second `train -o` or `--resume` on
it is refused; the kernel drops the lock when the process dies, however it dies. A run whose
run.json still says "running" while nobody holds the lock was killed: it reads as
"interrupted", and one killed before its first checkpoint restarts from the beginning.
The loop state beside each checkpoint (last.json) names the checkpoint's file and carries its
SHA-256, which resuming verifies; a kill -9 while checkpointing leaves the checkpoint before whole.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.files import sha256, write_text

CHECKSUM_KEY = "checkpoint_sha256"
CHECKPOINT_KEY = "checkpoint"  # the backend's file of the checkpoint, in last.json


class RunDirectory:
    """Paths and files of one training run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.run_json = self.path / "run.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.artifacts = self.path / "artifacts"
        self.model = self.path / "model.onnx"
        self.base_model = self.path / "base_model.onnx"  # the starting model, when fit was given a ModelProto
        self.created = False  # whether `make` made the folder
        self.plot = self.path / "curves.svg"
        self.lock_file = self.path / "run.lock"
        self.loop_state = self.checkpoints / "last.json"  # where the loop was at the last checkpoint, and its file
        self.best_checkpoint = self.checkpoints / "best.ckpt"

    @classmethod
    def new(cls, path: str | os.PathLike) -> RunDirectory:
        """A run yet to be made in `path`; refuses a folder that already holds a run."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise OnnxkitError(f"{run.path} is a file; give a folder for the run as out_dir", params=["out_dir"])
        run._refuse_existing()
        return run

    def _refuse_existing(self) -> None:
        if self.model.exists() and not self.run_json.exists():
            raise OnnxkitError(f"{self.path} holds a model.onnx that no training run wrote; choose another out_dir, "
                               "so it is not overwritten", params=["out_dir"])
        if self.run_json.exists():
            if self._live():
                raise OnnxkitError(f"{self.path} is in use by a training run that is still going; wait for it to "
                                   "end or choose another out_dir", params=["out_dir"])
            self._mark_if_killed()
            if self.model.exists() and self._status() == "completed":  # resume would refuse it: nothing to continue
                raise OnnxkitError(f"{self.path} already holds a finished training run; choose another out_dir",
                                   params=["out_dir"])
            again = "restart it" if not self.has_checkpoint() and not self.model.exists() else "continue it"
            raise OnnxkitError(f"{self.path} already holds a training run; {again} with resume={self.path}, or "
                               "choose another out_dir", params=["out_dir"])

    def make(self) -> None:
        """Create the folders (once everything has been checked)."""
        self.created = not self.path.exists()
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.artifacts.mkdir(exist_ok=True)
        except OSError as e:
            what = "write in the run folder" if self.path.is_dir() else "create the run folder"
            raise OnnxkitError(f"cannot {what} {self.path}: {e.strerror}; choose another output folder (-o, out_dir "
                               "in fit)") from e

    @classmethod
    def existing(cls, path: str | os.PathLike) -> RunDirectory:
        """A run to resume: it has a readable run.json, nobody is running it, and its checkpoint (if it
        got one) matches the checksum written with it. A run killed before its first checkpoint
        has none; `has_checkpoint` tells, and it restarts from the beginning."""
        run = cls(path)
        if not run.run_json.is_file():
            if (run.path / "artifacts").is_dir() or run.checkpoints.is_dir():  # killed before run.json was written
                raise OnnxkitError(f"{run.path} holds a run stopped before it began (no run.json): start it again "
                                   f"as before, with out_dir={run.path}", params=["out_dir"])
            raise OnnxkitError(f"{run.path} is not a training run (no run.json); resume the folder a run was written "
                               "to (its out_dir)", params=["out_dir"])
        if run._live():
            raise OnnxkitError(f"{run.path} is in use by a training run that is still going; wait for it to end")
        if not isinstance(run.read_json().get("config"), dict):
            raise OnnxkitError(f"{run.run_json} holds no run settings ('config'); the run cannot be resumed, "
                               "start a new one")
        run._mark_if_killed()
        if not run.checkpoints.is_dir():
            if run._ended_an_epoch():  # epochs are recorded once a checkpoint is: it had one, and lost it
                raise OnnxkitError(f"{run.path} has lost its checkpoints ({run.checkpoints} is missing); the run "
                                   "cannot be resumed, start a new one")
            run.checkpoints.mkdir()  # a data-parallel worker's copy of a run stopped before its first checkpoint
        if run.has_checkpoint():
            run.verify_checkpoint()
        return run

    def _ended_an_epoch(self) -> bool:
        """Whether metrics.jsonl records an epoch's end."""
        try:
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return False
        for line in lines:
            with contextlib.suppress(ValueError):
                if isinstance(record := json.loads(line), dict) and record.get("event") == "epoch":
                    return True
        return False

    def _status(self) -> str | None:
        """run.json's status (None when it cannot be read)."""
        try:
            return self.read_json().get("status")
        except OnnxkitError:
            return None

    def _mark_if_killed(self) -> None:
        """Record as interrupted a run that says it is running while nobody holds its lock: it was
        killed without a chance to say so."""
        try:
            info = self.read_json()
        except OnnxkitError:
            return
        if info.get("status") == "running":
            info["status"] = "interrupted"
            self.write_json(info)

    def has_checkpoint(self) -> bool:
        """Whether a checkpoint was completed: its loop state, written last, names it."""
        return self.loop_state.is_file()

    def discard(self) -> None:
        """Remove a new run that failed before its first checkpoint: the folder when this process
        made it, else only the files a run writes (the folder may hold the user's own)."""
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for folder in (self.checkpoints, self.artifacts):
            shutil.rmtree(folder, ignore_errors=True)
        for path in (self.run_json, self.metrics, self.plot, self.model, self.base_model, self.lock_file):
            path.unlink(missing_ok=True)

    def entries(self) -> set[str] | None:
        """The names in the run folder (None: there is none), to tell later what a failed start added to it."""
        try:
            return {path.name for path in self.path.iterdir()}
        except (FileNotFoundError, NotADirectoryError):
            return None

    def discard_unbegun(self, before: set[str] | None) -> None:
        """Remove what a new run that failed before it began (no run.json: a data-parallel worker killed while
        worker 0 built its artifacts, which took worker 0 down with it) added to the folder since `entries()`
        gave `before`: the folder when there was none, else the files and folders it added. Nothing of a run
        that began, nothing that was there before (a user's earlier run), nothing while another process holds
        the lock."""
        if self.run_json.exists() or self._live():
            return
        if before is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in (self.entries() or set()) - before:
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def restart(self) -> None:
        """Forget what a run killed before its first checkpoint had completed, to train it again."""
        self.metrics.unlink(missing_ok=True)
        for path in (self.best_checkpoint, *self._checkpoint_files()):
            path.unlink(missing_ok=True)

    # ---- the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, *, new: bool) -> Iterator[None]:
        """Hold the run's lock while training; refuse when another process holds it (or, for a
        `new` run, when another run got into the folder first)."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OnnxkitError(f"cannot lock the run folder {self.path}: {e.strerror}") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise OnnxkitError(f"cannot lock the run folder {self.path}: {e.strerror}") from e
                raise OnnxkitError(f"{self.path} is in use by a training run that is still going; wait for it to "
                                   "end or choose another out_dir", params=["out_dir"]) from None
            if new:
                self._refuse_existing()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _live(self) -> bool:
        """Whether another process holds the run's lock now."""
        try:
            fd = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
        return False

    # ---- files --------------------------------------------------------------------------------

    def read_json(self) -> dict[str, Any]:
        try:
            info = json.loads(self.run_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise OnnxkitError(f"{self.run_json} is damaged ({e}); the run cannot be resumed, start a new one") from e
        if not isinstance(info, dict):
            raise OnnxkitError(f"{self.run_json} is damaged (not a JSON object); the run cannot be resumed")
        return info

    def write_json(self, info: dict[str, Any]) -> None:
        write_text(self.run_json, json.dumps(info, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl; a last line cut short by a kill is dropped."""
        if not self.metrics.is_file():
            return []
        lines = self.metrics.read_text(errors="replace").splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if number == len(lines):
                    break  # half-written when the run was killed: the resumed run redoes it
                raise OnnxkitError(f"{self.metrics}: line {number} is damaged; the run cannot be resumed") from None
        return records

    def truncate_metrics(self, step: int, epochs: int) -> list[dict[str, Any]]:
        """Drop the records a run resumed from a checkpoint at optimizer step `step` after `epochs` whole epochs
        redoes: those after that step, and the record of an epoch whose last step it is but that had not ended
        (a stop on its last step: the resumed run ends it again); return the rest."""
        kept = [r for r in self.read_metrics()
                if r.get("step", 0) <= step and not (r.get("event") == "epoch" and r.get("epoch", 0) > epochs)]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    # ---- checkpoints -------------------------------------------------------------------------
    # A checkpoint is two files: the backend's (weights and optimizer state) and the loop state, last.json,
    # which names it and holds its SHA-256. The backend's file goes to whichever of two slots last.json does
    # not name, and last.json is written after it, so a kill -9 at any moment leaves the previous checkpoint
    # whole: last.json names it until the new one is complete.

    SLOTS = ("last-a.ckpt", "last-b.ckpt")
    LEGACY = "last.ckpt"  # the one file of runs checkpointed before the slots

    @property
    def last_checkpoint(self) -> Path:
        """The backend's file of the last completed checkpoint (where the next goes, while there is none)."""
        try:
            named = json.loads(self.loop_state.read_text()).get(CHECKPOINT_KEY, self.LEGACY)
        except (OSError, ValueError, AttributeError):
            named = self.SLOTS[0]
        return self.checkpoints / str(named)

    def next_checkpoint(self) -> Path:
        """Where the backend writes the next checkpoint: the slot the last one is not in."""
        last = self.last_checkpoint.name if self.has_checkpoint() else None
        return self.checkpoints / (self.SLOTS[1] if last == self.SLOTS[0] else self.SLOTS[0])

    def save_loop_state(self, saved: dict[str, Any], checkpoint: Path) -> None:
        """Complete the checkpoint whose backend file `checkpoint` was just written: last.json (the loop
        state) naming it, with its SHA-256; then the file of the checkpoint before goes."""
        write_text(self.loop_state, json.dumps({**saved, CHECKPOINT_KEY: checkpoint.name,
                                                CHECKSUM_KEY: sha256(checkpoint)}))
        for path in self._checkpoint_files():
            if path != checkpoint:
                path.unlink(missing_ok=True)

    def resume_files(self) -> list[str]:
        """What resuming the run reads, relative to its folder (data-parallel workers are sent a copy)."""
        files = [self.run_json, self.metrics, self.artifacts]
        if self.has_checkpoint():
            files += [self.loop_state, self.last_checkpoint]
        return [str(path.relative_to(self.path)) for path in files]

    def _checkpoint_files(self) -> list[Path]:
        return [self.checkpoints / name for name in (*self.SLOTS, self.LEGACY)]

    def verify_checkpoint(self) -> None:
        """Refuse a checkpoint that is missing or does not match the checksum its loop state records."""
        if not self.artifacts.is_dir() or not any(self.artifacts.iterdir()):
            raise OnnxkitError(f"{self.path} has lost its training graphs ({self.artifacts} is missing or empty); "
                               "the run cannot be resumed, start a new one")
        for path in (self.loop_state, self.last_checkpoint):
            if not path.is_file():
                raise OnnxkitError(f"{self.path} has no complete checkpoint ({path} is missing); the run cannot be "
                                   "resumed, start a new one")
        try:
            expected = json.loads(self.loop_state.read_text()).get(CHECKSUM_KEY)
        except (OSError, ValueError, AttributeError) as e:
            raise OnnxkitError(f"{self.loop_state} is damaged ({e}); the run cannot be resumed, start a new one") from e
        if expected is not None and sha256(self.last_checkpoint) != expected:
            raise OnnxkitError(
                f"{self.last_checkpoint} does not match its checksum (damaged, or the run was killed while "
                "checkpointing); the run cannot be resumed, start a new one"
            )
