"""The model repository: served models by name, each loaded from its file, reloadable while serving.

Backs the V2 model repository extension (index, load, unload) and `--watch`. A load
reads the file again in a thread, warms the new session up, and only then hands it to
the model's batcher: requests decoded before the swap finish on the old session, later
ones use the new one, so none is dropped or answered by a half-loaded model. If the
file does not load, the version served before stays served.

`--watch` polls each served model's file and the weight files it names (inode, size, mtime) every `WATCH_INTERVAL_S`
and reloads it once a change has held still for one poll, so a file written in place is
not read half-written (`onnxkit train` and `onnxkit.files` replace files atomically).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.files import model_location, weight_files
from onnxkit.runtime import Model
from onnxkit.serve.batcher import Batcher
from onnxkit.serve.protocol import MODEL_VERSION, RequestError

WATCH_INTERVAL_S = 0.5
Stamp = tuple[tuple[int, int, int] | None, ...] | None  # (inode, size, mtime ns) of the model's files


@dataclass
class _Entry:
    path: Path
    batcher: Batcher
    stamp: Stamp  # of the file that was loaded last
    reason: str = ""  # why the last load failed, or why the model is unavailable
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Served(dict[str, Batcher]):
    """The batchers of the models served now, by name, with why each other model of the repository is not."""

    def __init__(self, entries: Mapping[str, _Entry]) -> None:
        super().__init__((name, entry.batcher) for name, entry in entries.items())
        self._entries = entries

    def unserved(self, name: str) -> str | None:
        """Why model `name` of the repository is not served (unloaded, or a load that failed); None for a model
        served, or not in the repository."""
        entry = self._entries.get(name)
        return None if entry is None or name in self else entry.reason or "unloaded"


class Repository:
    """The models a server serves. `served` maps the name of each loaded model to its batcher."""

    def __init__(
        self,
        models: list[Model],
        paths: dict[str, Path],
        loader: Callable[[str, Path, Model | None], Model],
        batcher: Callable[[Model], Batcher],
    ) -> None:
        """`loader(name, path, served)` loads a model to replace `served` (None if none is served); `batcher(model)`
        makes the batcher that serves it."""
        self.loader = loader
        self._entries = {m.name: _Entry(paths[m.name], batcher(m), _stamp(paths[m.name])) for m in models}
        self.served = Served(self._entries)
        self._watch: asyncio.Task | None = None

    def start(self, watch: bool = False) -> None:
        """Start the batchers (and the file watch) on the running event loop."""
        for entry in self._entries.values():
            entry.batcher.start()
        if watch:
            self._watch = asyncio.get_running_loop().create_task(self._watch_files())

    def abandon(self) -> None:
        """Answer every queued or running request with a 503 now (`Batcher.abandon`)."""
        for entry in self._entries.values():
            entry.batcher.abandon()

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await asyncio.gather(*(entry.batcher.stop() for entry in self._entries.values()))

    def index(self) -> list[dict[str, Any]]:
        """The V2 repository index: every model with its state, READY or UNAVAILABLE."""
        return [
            {
                "name": name,
                "version": MODEL_VERSION,
                "state": "READY" if name in self.served else "UNAVAILABLE",
                "reason": entry.reason,
            }
            for name, entry in self._entries.items()
        ]

    async def load(self, name: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Load (or reload) model `name` from its file; RequestError(400) if that fails, or for load `parameters`
        (Triton's new config or files): a model is reloaded from its own file."""
        entry = self._entry(name)
        if parameters:
            raise RequestError(
                400, f"load parameters ({', '.join(parameters)}) are not supported: a model is reloaded from its file"
            )
        async with entry.lock:
            stamp = _stamp(entry.path)
            try:
                served = entry.batcher.model if name in self.served else None
                model = await asyncio.to_thread(self.loader, name, entry.path, served)
            except OnnxkitError as e:
                entry.reason = f"loading {entry.path} failed: {e}"
                kept = "the version loaded before is still served" if name in self.served else "it is not served"
                raise RequestError(400, f"model {name!r}: {entry.reason}; {kept}") from None
            entry.batcher.model = model
            entry.stamp, entry.reason = stamp, ""
            self.served[name] = entry.batcher

    async def unload(self, name: str) -> None:
        """Stop serving model `name`; requests already decoded for it still finish."""
        entry = self._entry(name)
        async with entry.lock:
            self.served.pop(name, None)
            entry.batcher.model = None  # the session is freed once its last request is answered
            entry.reason = "unloaded"

    def _entry(self, name: str) -> _Entry:
        if name not in self._entries:
            raise RequestError(404, f"no model {name!r} in the repository.{suggest(name, self._entries)}")
        return self._entries[name]

    async def _watch_files(self) -> None:
        seen: dict[str, Stamp] = {}
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            for name, entry in self._entries.items():
                stamp = _stamp(entry.path)
                changed = name in self.served and stamp is not None and stamp != entry.stamp
                if changed and seen.get(name) == stamp and not entry.lock.locked():
                    await self._reload(name)
                seen[name] = stamp

    async def _reload(self, name: str) -> None:
        try:
            await self.load(name)
            print(f"model {name}: loaded the new version of {self._entries[name].path}", file=sys.stderr, flush=True)
        except Exception as e:  # a bad file (RequestError) or a failed warm-up: keep serving the old version
            self._entries[name].stamp = _stamp(self._entries[name].path)  # retry only after the next change
            print(f"warning: {e}", file=sys.stderr, flush=True)


def _stamp(path: Path) -> Stamp:
    """The (inode, size, mtime ns) of the model file and of each weight file it names (a replaced model.onnx.data
    is a new version too); None when the model file is missing."""
    model = _file_stamp(path)
    if model is None:
        return None
    folder, names = _weight_files(path, model)
    return (model, *(_file_stamp(folder / name) for name in names))


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    with contextlib.suppress(OSError):
        info = os.stat(path)
        return info.st_ino, info.st_size, info.st_mtime_ns
    return None


@functools.lru_cache(maxsize=64)
def _weight_files(path: Path, stamp: tuple[int, int, int]) -> tuple[Path, tuple[str, ...]]:
    """The folder of the weight files that the model at `path` names, and their names: read once per version of
    the model file (`stamp`), not at every poll."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable (half-written, say): its own stamp alone; its load says why
        return path.parent, ()
    return model_location(path, model).parent, tuple(weight_files(model))
