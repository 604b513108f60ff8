"""Batch inference on Ray Data (extra `ray`): a model over a large input, one actor per worker
holding an `onnxkit.runtime` session.

    from onnxkit.runtime.batch import predict_on_ray
    prediction = predict_on_ray("model.int8.onnx", "inputs/", "predictions.npz", workers=4)

Inputs: a file or a folder of files (subfolders too, sorted by path, read as one sequence of rows): .npy, .npz (arrays
by input name), .json, .csv / .tsv (one example per row, as `onnxkit predict` reads them), .parquet (a column per
input, each row a number or a nested list shaped like one example); for a model that carries a
tokenizer, .txt (one text per line) or a `text` column of .csv / .parquet; a folder of images (a row each, named
by its file, decoded as `onnxkit predict` decodes them). The driver reads and
tokenizes the input (padded to the longest text, as `onnxkit predict` does) and puts it in Ray's
object store once; the dataset is the list of batch numbers, so each actor runs exactly the
batches `Model.predict` would run, and the result equals the single-process one bit for bit.
Results come back in input order and are written in any format `onnxkit predict` writes.

Ray joins the cluster at $RAY_ADDRESS when it is set, else starts a local one (and stops it at
the end). Ray is imported only here, when used.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.categories import encode, encodes_categories
from onnxkit.errors import OnnxkitError
from onnxkit.files import column_cells, missing_model, parquet_table
from onnxkit.label_columns import TEXT_COLUMN, trained_columns
from onnxkit.runtime.datafiles import INPUT_SUFFIXES as FILE_SUFFIXES
from onnxkit.runtime.datafiles import (
    checked_feeds,
    holds_images,
    image_rows,
    read_inputs,
    read_texts,
    write_prediction,
)
from onnxkit.runtime.model import Model, ends_in_probabilities, load
from onnxkit.runtime.prediction import Prediction
from onnxkit.runtime.session import device_spec
from onnxkit.signals import handled

INPUT_SUFFIXES = (*FILE_SUFFIXES, ".parquet", ".txt")  # predict's, and Ray's own (a .json was left out unsaid)
BATCH_COLUMN = "onnxkit.batch"  # which batch a result row belongs to
INSTALL = "pip install 'onnxkit[ray]'"


def predict_on_ray(
    model: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    batch_size: int = 512,
    device: str = "cpu",
    threads: int | None = None,
    top_k: int | None = None,
    probs: bool = False,
    labels_only: bool = False,
) -> Prediction:
    """Run `model` over every row of `data` (a file or a folder of them) on Ray; write the result
    to `output` when given (.json, .npz, .npy or .csv) and return it, rows in input order.

    `workers`: actors, each with a session (default: the cluster's CPUs); `threads` per session
    (default: this machine's cores / workers on a local cluster, else 1); `probs`: class
    probabilities in place of the scores, as `onnxkit predict --probs`; `labels_only`: a .csv of the answers alone
    (`write_prediction`).
    """
    if workers is not None and workers < 1:
        raise OnnxkitError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise OnnxkitError(f"batch size must be at least 1, got {batch_size}")
    device_spec(device)  # its form, here; whether CUDA is there is for the actors' nodes to say
    ray = _import_ray()
    model_bytes = Path(model).read_bytes() if Path(model).is_file() else None
    if model_bytes is None:
        raise missing_model(model)
    local = load(model_bytes, device="cpu", threads=1, batch_size=None, name=Path(model).stem)
    if probs and not local.given_probabilities:
        local.given_probabilities = ends_in_probabilities(model_bytes)
    images = holds_images(data)  # a folder of images: decoded here, as predict decodes them
    feeds = read_inputs(data, local) if images else read_rows(data, local)
    rows = len(next(iter(feeds.values())))
    batches = -(-rows // batch_size)
    with handled(None):  # ray.init replaces SIGTERM's handler, and ray.shutdown leaves its own in place
        started = _connect(ray, workers)
        try:
            resources = ray.cluster_resources()
            workers = min(workers or int(resources.get("CPU", 1)), batches)
            threads = threads or (max(1, (os.cpu_count() or 1) // workers) if started else 1)
            shared = [ray.put(model_bytes), ray.put(feeds)]  # once in the object store; each actor fetches them
            actors = actor_arguments(shared, batch_size, threads, device, workers, resources.get("GPU", 0), local.name)
            outputs = _run(ray, actors, batches, workers)
        finally:
            if started:
                ray.shutdown()
    prediction = local.prediction_of(outputs)
    if probs:
        prediction = prediction.with_probabilities()
    if output is not None:
        write_prediction(output, prediction, top_k, image_rows(data) if images else None, labels_only=labels_only)
    return prediction


def input_files(data: str | os.PathLike) -> list[Path]:
    """`data` itself, or the files with a known suffix in the folder `data` and its subfolders, sorted
    by path (a subfolder's files where its name sorts)."""
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES)
        if not files:
            raise OnnxkitError(f"{path}: no {', '.join(INPUT_SUFFIXES)} files in this folder")
        return files
    if not path.is_file():
        raise OnnxkitError(f"{path}: no such file or folder")
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise OnnxkitError(f"{path}: unknown input format for batch inference; use one of {', '.join(INPUT_SUFFIXES)}")
    return [path]


def read_rows(data: str | os.PathLike, model: Model) -> dict[str, np.ndarray]:
    """Session feeds for every row of `data`, files in order; texts tokenized all together."""
    from onnxkit.runtime.text import reads_text, text_feeds

    files = input_files(data)
    if reads_text(model):
        texts = [text for path in files for text in _read_texts(path)]
        if not texts:
            raise OnnxkitError(f"{data}: no texts")
        return text_feeds(model, texts)
    parts = [_file_feeds(path, model) for path in files]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _file_feeds(path: Path, model: Model) -> dict[str, np.ndarray]:
    """One file's feeds, NaN refused as predict does; an error names the file."""
    try:
        return checked_feeds(path, model, _read_tensors(path, model))
    except OnnxkitError as e:
        if str(path) in str(e):
            raise
        raise OnnxkitError(f"{path}: {e}") from e


def _read_tensors(path: Path, model: Model) -> dict[str, Any]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        raise OnnxkitError(f"{path}: text needs a model that carries a tokenizer; model {model.name!r} has none")
    if suffix != ".parquet":
        return read_inputs(path, model)
    table = parquet_table(path)
    if table.num_rows == 0:
        raise OnnxkitError(f"{path}: no rows; give at least one example")
    names = [spec.name for spec in model.inputs]
    if len(names) == 1 and table.num_columns == 1:
        return {names[0]: _column(table.column(0))}
    trained = trained_columns(model.metadata)  # the CSV columns it trained on: its features, by name, as a CSV's
    if len(names) == 1 and encodes_categories(trained, table.column_names):  # its categories, encoded by name
        cells = {name: column_cells(table.column(name).to_pylist()) for name in table.column_names}
        return {names[0]: encode(cells, trained, str(path)).warn_unseen(str(path))}  # type: ignore[arg-type]
    if len(names) == 1 and names[0] not in table.column_names and trained and \
            all(name in table.column_names for name in trained):
        return {names[0]: np.column_stack([_column(table.column(name)) for name in trained])}
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise OnnxkitError(f"{path}: no column for model input(s) {', '.join(missing)} (columns: "
                           f"{', '.join(table.column_names)}); name a column after each input")
    return {name: _column(table.column(name)) for name in names}


def _read_texts(path: Path) -> list[str]:
    if path.suffix.lower() != ".parquet":
        return read_texts(path)
    table = parquet_table(path)
    if TEXT_COLUMN not in table.column_names:
        raise OnnxkitError(f"{path}: a Parquet file of texts needs a 'text' column")
    return [str(t) for t in table.column(TEXT_COLUMN).to_pylist()]


def _column(column: Any) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False)
    return np.array(column.to_pylist()) if values.dtype == object else values


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OnnxkitError(f"--ray needs Ray Data; {INSTALL}") from None
    return ray


def _connect(ray: Any, workers: int | None) -> bool:
    """Join $RAY_ADDRESS's cluster, or start a local one; True when this call started Ray here."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    local = {} if address else {"num_cpus": max(os.cpu_count() or 1, workers or 1)}
    problem = _unreachable(address) if address else None
    if problem:  # ray.init would retry for minutes
        raise OnnxkitError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({problem}); start it (ray start "
                           "--head) or unset RAY_ADDRESS to run on a local one")
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True, **local)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        if not address:
            raise OnnxkitError(f"could not start a local Ray cluster: {e}") from e
        raise OnnxkitError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({e}); start it (ray start "
                           "--head) or unset RAY_ADDRESS to run on a local one") from e
    return True


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to a `host:port` (or `ray://host:port`) address fails, or None
    (also for `auto` and other forms Ray resolves itself)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def actor_arguments(shared: Sequence[Any], batch_size: int, threads: int, device: str, workers: int,
                    cluster_gpus: float, name: str | None = None) -> dict[str, Any]:
    """`map_batches` keywords for the actors: the resources each asks Ray for, and its constructor's
    arguments, the session's device among them. With a `cuda` device (any index) each actor asks
    for a share of a GPU, 1 / ceil(workers / GPUs), so Ray places it on a GPU node, spreads the
    actors over the GPUs and makes the one it assigns visible to the actor as `cuda` (index 0).
    Other devices (`cpu`, `auto`) go to the sessions as given."""
    kind, _ = device_spec(device)
    resources: dict[str, float] = {"num_cpus": 1}
    if kind == "cuda":
        if cluster_gpus < 1:
            raise OnnxkitError(f"device {device!r}: the Ray cluster has no GPUs; add GPU nodes or use --device cpu")
        resources["num_gpus"] = 1 / math.ceil(workers / int(cluster_gpus))
        device = "cuda"
    return {**resources, "fn_constructor_kwargs": {"shared": shared, "batch_size": batch_size, "threads": threads,
                                                    "device": device, "name": name}}


def _run(ray: Any, actors: dict[str, Any], batches: int, workers: int) -> dict[str, np.ndarray]:
    """Every batch through `workers` actors (`actor_arguments`); the outputs by name, rows in input order.

    The actors are not restarted. Ray Data asks for endless restarts and task retries by default,
    which made an actor that crashed on a batch (a segfault, the OOM killer) retry it for ever, and made
    Ray's core worker log an ERROR line on every run, successful ones too: the actors' constructor
    arguments (Ray Data's own context and UDF) are in the object store, from where a restart cannot
    count on them (ray-project/ray#53727, #57733). A failure is one OnnxkitError."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = sys.stderr.isatty()
    context.raise_original_map_exception = True  # the actor's OnnxkitError reaches here, not a UserCodeException
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.CRITICAL)  # its INFO lines, and a failure's traceback logged before it is raised
    # batch numbers, made here (no read task competes with the actors for CPUs), in blocks the actors share
    numbers = ray.data.from_numpy(np.array_split(np.arange(batches), min(batches, 4 * workers)))
    try:
        with warnings.catch_warnings():  # map_batches' **ray_remote_args, its only way to max_restarts, is deprecated
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", DeprecationWarning)
            results = numbers.map_batches(
                _BatchPredictor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                **actors, **_no_restarts(numbers.map_batches))
            parts = list(results.iter_batches(batch_size=None, batch_format="numpy"))
    except ray.exceptions.RayError as e:
        raise _ray_failure(e, ray.exceptions.RayActorError) from e
    finally:
        data_log.setLevel(level)
    done = np.concatenate([p[BATCH_COLUMN] for p in parts])
    order = np.argsort(done, kind="stable")  # preserve_order already keeps it; this makes sure
    if not np.array_equal(np.unique(done), np.arange(batches)):
        raise OnnxkitError(f"Ray returned {len(np.unique(done))} of {batches} batches; run again")
    return {name: np.concatenate([p[name] for p in parts])[order] for name in parts[0] if name != BATCH_COLUMN}


def _no_restarts(map_batches: Any) -> dict[str, Any]:
    """`max_restarts=0` where `map_batches` still takes Ray's remote arguments (Ray Data says they go in 2.64)."""
    kinds = {p.kind for p in inspect.signature(map_batches).parameters.values()}
    return {"max_restarts": 0} if inspect.Parameter.VAR_KEYWORD in kinds else {}


def _ray_failure(error: Exception, actor_died: type[Exception]) -> OnnxkitError:
    """A failed Ray run as one line: the actor's own OnnxkitError (a batch the model failed on), or what Ray
    says went wrong (an actor's process died), without the worker's traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, OnnxkitError):  # less the retry note Ray Data adds to its message
        return OnnxkitError(str(cause).split("\nFailed to apply UDF transform", 1)[0])
    if isinstance(cause, Exception) and not isinstance(error, actor_died):
        return OnnxkitError(f"a Ray actor failed: {type(cause).__name__}: {_first_line(cause)}")
    reason = _first_line(error).removesuffix(".")
    return OnnxkitError(f"a Ray actor died while predicting ({reason}); if its process ran out of memory, "
                        "use a smaller --batch-size or fewer --workers")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class _BatchPredictor:
    """A Ray Data actor: one onnxkit.runtime session, running the batches whose numbers it is given."""

    def __init__(self, shared: Sequence[Any], batch_size: int, threads: int, device: str,
                 name: str | None = None) -> None:
        import ray

        model, self.feeds = ray.get(list(shared))
        self.model = load(model, device=device, threads=threads, batch_size=None, name=name)
        self.batch_size = batch_size
        self.run = self.model._checked_run  # a failure inside the model is an OnnxkitError, as in plain predict

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        number = int(batch["data"][0])
        lo = number * self.batch_size
        feeds = {name: value[lo : lo + self.batch_size] for name, value in self.feeds.items()}
        outputs = self.run(feeds)
        rows = len(next(iter(feeds.values())))
        return {BATCH_COLUMN: np.full(rows, number), **outputs}
