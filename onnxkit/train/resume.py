"""A run to go on with: its stored config, the model and data it began with (each checked unchanged: by
fingerprint, by path, or a Dataset's by its arrays), the adapter it trained with, and how a run names its data so
that resume finds it again from any folder."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import onnx

from onnxkit.data import Dataset, data_sha256, datasets, in_model_order, in_trained_columns, load_dataset
from onnxkit.data.formats import READERS
from onnxkit.errors import OnnxkitError, first_few
from onnxkit.files import (
    check_external_data,
    check_fits_protobuf,
    load_model,
    model_sha256,
    read_weights,
    resolved,
    sha256,
    weight_files,
)
from onnxkit.signals import last_stop
from onnxkit.train.backends import get_backend
from onnxkit.train.config import GraphAdapter, TrainConfig, TrainingInterrupted, adapter_settings
from onnxkit.train.lora import LoraAdapter
from onnxkit.train.run_directory import RunDirectory


def resumed(
    resume: str | os.PathLike, data: str | os.PathLike | Dataset | None
) -> tuple[RunDirectory, TrainConfig, onnx.ModelProto, Dataset]:
    """The run to resume, its stored config, and the model and data it began with (each checked unchanged)."""
    run = RunDirectory.existing(resume)
    if run.read_json().get("status") == "completed" and run.model.is_file():  # said before the data is read
        raise OnnxkitError(f"the run in {run.path} has already finished; start a new run to train more")
    config = _config_from_json(run.read_json()["config"])
    try:
        get_backend(config.backend)  # a run keeps its backend: the default one's advice would be refused
    except OnnxkitError as e:
        raise OnnxkitError(f"the run in {run.path} trained on the {config.backend} backend, which this environment "
                           f"cannot run ({str(e).split(';')[0]}); resume it where that backend is installed (make "
                           "venv-ort: .venv-ort/bin/onnxkit train --resume ...)") from e
    proto = _load_checked(config)
    if config.data_in_memory and not isinstance(data, Dataset):
        raise OnnxkitError(f"this run trained on an in-memory Dataset ({config.data!r}); pass it again as data=")
    if not config.data_in_memory and data is not None and (
            isinstance(data, Dataset) or data_reference(data) != config.data):
        raise OnnxkitError(f"this run trained on {config.data}; resume it without data= (it reads that again), or "
                           "start a new run on other data")
    if config.data_sha256 and data_sha256(config.data) != config.data_sha256:
        raise OnnxkitError(f"{config.data} changed since this run started; resume needs the data the run began "
                           "with (or start a new run on the new data)")
    if isinstance(data, Dataset):
        dataset = in_model_order(in_trained_columns(data, proto), proto)
        if config.data_fingerprint and dataset.fingerprint() != config.data_fingerprint:
            raise OnnxkitError(f"data is not the Dataset this run trained on ({config.data!r}): its arrays differ; "
                               "resume with the same Dataset, or start a new run on this one")
    else:
        dataset = load_dataset(config.data, seed=config.data_seed, model=proto, label=config.label, drop=config.drop)
    return run, config, proto, dataset


def run_adapter(config: TrainConfig, adapter: GraphAdapter | None) -> GraphAdapter | None:
    """The adapter the run trains with: the one given, or on resume the LoRA adapter its settings describe;
    refused when it is not the one the run was trained with."""
    if adapter is None and config.adapter == LoraAdapter.__name__ and config.adapter_settings:
        adapter = LoraAdapter.from_settings(config.adapter_settings)  # resume alone continues a LoRA run
    if config.adapter and (adapter is None or type(adapter).__name__ != config.adapter):
        raise OnnxkitError(f"this run was trained with the {config.adapter} adapter; pass the same adapter to resume "
                           "(onnxkit train: the same --lora-* options next to --resume)")
    if adapter is not None and config.adapter_settings not in (None, adapter_settings(adapter)):
        shown = ", ".join(f"{k} {v}" for k, v in config.adapter_settings.items())
        raise OnnxkitError(f"this run was trained with {config.adapter} ({shown}); resume it with the same settings "
                           "(onnxkit train: --resume RUN_DIR alone takes them from the run)")
    return adapter


def data_reference(data: str | os.PathLike | Dataset) -> str:
    """How the run and the trained model name their data: a file or a folder of images by its absolute path (so
    resume, eval and quantize find it from any folder), a built-in dataset or a Dataset by name."""
    if isinstance(data, Dataset):
        return data.name
    return str(resolved(data)) if on_disk(data) else str(data)


def on_disk(data: str | os.PathLike | Dataset) -> bool:
    """Whether `data` is a data file or a folder of images (not a dataset name or a Dataset)."""
    if isinstance(data, Dataset):
        return False
    path = Path(data)
    return path.suffix.lower() in READERS and path.is_file() or str(data) not in datasets() and path.is_dir()


def _config_from_json(raw: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def _load_checked(config: TrainConfig) -> onnx.ModelProto:
    path = Path(config.model)
    if not path.is_file():
        raise OnnxkitError(f"{path}: the model this run started from is gone; put it back at that path to resume "
                           "(or start a new run)")
    proto, fingerprint, files = load_fingerprinted(path)
    legacy = sha256(path) if files else None  # a run begun before weight files were fingerprinted: the .onnx's own
    if config.model_sha256 not in (fingerprint, legacy):
        kept = f" or the weights it keeps in {first_few(files)}" if files else ""
        raise OnnxkitError(f"{path}{kept} changed since this run started; resume needs the model the run began with")
    return proto


def load_fingerprinted(path: Path) -> tuple[onnx.ModelProto, str, list[str]]:
    """The model at `path` with its weights, its fingerprint (`files.model_sha256`: over its weight files too) and
    the weight files it keeps its tensors in."""
    proto = load_model(path, load_weights=False)
    check_fits_protobuf(proto, path, "train")
    check_external_data(proto, path)  # a missing or short weights file is named before fingerprinting reads it
    fingerprint, files = model_sha256(path, proto), weight_files(proto)
    read_weights(proto, path)
    return proto, fingerprint, files


def interrupted_at_last_checkpoint(run: RunDirectory) -> TrainingInterrupted:
    """A stop that cut the wrap-up of an earlier one short (a second Ctrl-C while the first's checkpoint was being
    written), as a TrainingInterrupted at the run's last complete checkpoint: it said only 'stopped by SIGINT', not
    that the run can go on, nor how."""
    try:
        saved = json.loads(run.loop_state.read_text())
        epoch, step = int(saved["epoch"]) + 1, int(saved["step"])
    except (OSError, ValueError, KeyError, TypeError):
        epoch, step = 0, 0
    return TrainingInterrupted(run.path, run.last_checkpoint, epoch, step, last_stop())

