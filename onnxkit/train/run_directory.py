"""The run directory: run.json, metrics.jsonl, checkpoints/, artifacts/, model.onnx, curves.png."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from onnxkit.errors import OnnxkitError
from onnxkit.files import write_text


class RunDirectory:
    """Paths and files of one training run."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.run_json = self.path / "run.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoints = self.path / "checkpoints"
        self.artifacts = self.path / "artifacts"
        self.model = self.path / "model.onnx"
        self.plot = self.path / "curves.png"
        self.last_checkpoint = self.checkpoints / "last.ckpt"
        self.loop_state = self.checkpoints / "last.json"  # where the loop was at the last checkpoint
        self.best_checkpoint = self.checkpoints / "best.ckpt"

    @classmethod
    def new(cls, path: str | os.PathLike) -> RunDirectory:
        """A run yet to be made in `path`; refuses a folder that already holds a run."""
        run = cls(path)
        if run.run_json.exists() or run.model.exists():
            raise OnnxkitError(
                f"{run.path} already holds a training run; continue it with --resume {run.path}, "
                "or choose another output folder (-o)"
            )
        if run.path.exists() and not run.path.is_dir():
            raise OnnxkitError(f"{run.path} is a file; give a folder for the run (-o)")
        return run

    def make(self) -> None:
        """Create the folders (once everything has been checked)."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self.artifacts.mkdir(exist_ok=True)
        except OSError as e:
            raise OnnxkitError(f"cannot create the run folder {self.path}: {e.strerror}") from e

    @classmethod
    def existing(cls, path: str | os.PathLike) -> RunDirectory:
        """A run to resume; it must have run.json and a checkpoint."""
        run = cls(path)
        if not run.run_json.is_file():
            raise OnnxkitError(f"{run.path} is not a training run (no run.json); pass the folder given to -o")
        if not run.last_checkpoint.is_file():
            raise OnnxkitError(f"{run.path} has no checkpoint to resume from ({run.last_checkpoint} is missing)")
        return run

    def read_json(self) -> dict[str, Any]:
        return json.loads(self.run_json.read_text())

    def write_json(self, info: dict[str, Any]) -> None:
        write_text(self.run_json, json.dumps(info, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Drop the records after optimizer step `step` (those a resumed run redoes); return the rest."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))
        return kept
