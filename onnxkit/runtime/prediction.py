"""The result of `Model.predict`: the raw outputs, plus class labels when the model has them."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import numpy as np

from onnxkit.errors import OnnxkitError, first_few


class UnknownOutput(OnnxkitError, KeyError):
    """An output name the model lacks: an OnnxkitError, and the KeyError a mapping raises (unquoted message)."""

    __str__ = Exception.__str__


@dataclass(frozen=True)
class Prediction:
    """Every model output by name; for classifiers, the predicted classes and their names.

    The scores output holds the scores (logits): the first, or `scores_output` (the output training fit,
    metadata onnxkit.output; a scikit-learn classifier's probabilities, its first output being the label);
    `probabilities()` turns them into class
    probabilities (softmax; sigmoid for a binary classifier). A binary classifier's single
    logit column is read as the scores [0, logit] of classes 0 and 1, so argmax and
    softmax agree with thresholding and sigmoid. A model whose output already is probabilities
    (metadata onnxkit.scores, written by `fit`) keeps them: a binary one's column p reads as
    [1 - p, p].
    """

    outputs: dict[str, np.ndarray]
    class_names: tuple[str, ...] | None = None
    task: str | None = None  # metadata onnxkit.task: "classification", "binary", "regression", ...
    given_probabilities: bool = False  # the scores output is class probabilities, not logits
    scores_output: str | None = None  # the output holding the scores, when not the first (trained, scikit-learn's)
    multi_label: bool = False  # a binary task's several scores per row, each one 0/1 label's logit (or probability)
    target: str | None = None  # the header of the table column the model was trained to predict (`label_header`)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.outputs:
            raise UnknownOutput(f"no output {name!r}; the model's outputs: {', '.join(self.outputs)}")
        return self.outputs[name]

    def __contains__(self, name: object) -> bool:
        return name in self.outputs

    def __iter__(self) -> NoReturn:  # Python's fallback would call self[0], self[1], ...: KeyError 0
        raise TypeError("a Prediction is not iterable: iterate over .outputs (by name), or .classes or .scores "
                        "(by row)")

    def __array__(self, dtype: Any = None, copy: Any = None) -> NoReturn:
        """np.asarray(prediction) says which array to take (numpy's own: 'Could not convert object to sequence')."""
        raise TypeError(f"a Prediction is not an array: take .scores (output {self.scores_name!r}), .classes, "
                        f".probabilities() or an output by name, prediction[{self.scores_name!r}]")

    def __len__(self) -> int:
        """The rows: the scores output's, else (a scalar scores output) the most any output has, else 1."""
        if np.ndim(self.scores) or isinstance(self.scores, list):
            return len(self.scores)
        return max((len(v) for v in self.outputs.values() if np.ndim(v) or isinstance(v, list)), default=1)

    @property
    def scores_name(self) -> str:
        """The name of the output holding the scores: `scores_output` when given, else the first."""
        return self.scores_output if self.scores_output in self.outputs else next(iter(self.outputs))

    @property
    def scores(self) -> np.ndarray:
        """The scores: the output `scores_name`."""
        return self.outputs[self.scores_name]

    def _scores_array(self) -> np.ndarray:
        """The scores as an array, a binary classifier's [batch] logits (a PyTorch export's `.squeeze(-1)`, which
        predict refused: 'class predictions need [batch, classes] scores') as their [batch, 1] column."""
        scores = np.asarray(self.scores)
        return scores[:, None] if self.task == "binary" and scores.ndim == 1 else scores

    @property
    def one_logit(self) -> bool:
        """Whether the scores are a binary classifier's single logit column (not probabilities)."""
        scores = self._scores_array()
        return self.task == "binary" and scores.ndim == 2 and scores.shape[1] == 1 and not self.given_probabilities

    def class_scores(self) -> np.ndarray:
        """Scores as [rows, classes]."""
        if self.task not in (None, "classification", "binary"):
            raise OnnxkitError(f"this is a {self.task} model: it predicts values, not classes")
        if self.multi_label:
            raise OnnxkitError("this is a multi-label model: each score is one 0/1 label's logit, not a class's "
                               "score; read them as values (--probs: each label's sigmoid)")
        scores = self._scores_array()
        if self.class_ids() is not None:
            raise OnnxkitError(f"output {self.scores_name!r} holds class ids, not scores: read .classes or .labels "
                               "(top-k and probabilities need a [batch, classes] scores output)")
        if scores.ndim != 2:
            raise OnnxkitError(f"class predictions need [batch, classes] scores, got shape {scores.shape} "
                               f"(output {self.scores_name!r})")
        if scores.shape[1] == 1 and (self.task == "binary" or len(self.class_names or ()) == 2):
            other = 1.0 - scores if self.given_probabilities else np.zeros_like(scores)
            scores = np.concatenate([other, scores], axis=1)
        elif scores.shape[1] == 1:  # a foreign regressor's [batch, 1]: '0 (74.23)' for every row before
            raise OnnxkitError(f"output {self.scores_name!r} has one value per row, which names no classes (a binary "
                               "classifier says so in its metadata, as onnxkit train writes it); read it as values")
        return scores

    def probabilities(self) -> np.ndarray:
        """Class probabilities as [rows, classes] float32: the softmax of the scores, or for a binary
        classifier's single logit z the sigmoid pair [1 - sigmoid(z), sigmoid(z)] (for a multi-label
        one's logits, each one's sigmoid, shaped as they are)."""
        scores = self._scores_array().astype(np.float64)
        if self.multi_label:  # each label's sigmoid
            return (scores if self.given_probabilities else 0.5 * (1.0 + np.tanh(0.5 * scores))).astype(np.float32)
        if self.given_probabilities or self.reads_as_probabilities():
            return self.class_scores().astype(np.float32)
        if self.one_logit:
            positive = 0.5 * (1.0 + np.tanh(0.5 * scores))  # sigmoid, without overflow for large |z|
            return np.concatenate([1.0 - positive, positive], axis=1).astype(np.float32)
        z = self.class_scores().astype(np.float64)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def reads_as_probabilities(self) -> bool:
        """Whether the scores already are class probabilities, which no metadata said (a foreign model ending in
        Softmax, whose graph the runtime does not read): every row in [0, 1] summing to 1, which logits of two or
        more classes hardly ever do (a softmax of them was 0.44 where the model said 0.64)."""
        scores = np.asarray(self.scores)
        if scores.ndim != 2 or scores.shape[1] < 2 or not len(scores) or scores.dtype.kind != "f":
            return False
        return bool(((scores >= 0) & (scores <= 1)).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4))

    def with_probabilities(self) -> Prediction:
        """This prediction with the scores replaced by `probabilities()` (output `probabilities`), so
        top-k, tables and saved files show probabilities instead of logits."""
        rest = {name: value for name, value in self.outputs.items() if name not in (self.scores_name, "probabilities")}
        return replace(self, outputs={"probabilities": self.probabilities(), **rest}, scores_output=None,
                       given_probabilities=True)

    def class_ids(self) -> np.ndarray | None:
        """The class of each row when the scores output holds class ids ([rows] integers: a classifier exported as
        its argmax alone), else None."""
        scores = self.scores
        if self.task in (None, "classification") and isinstance(scores, np.ndarray) and scores.ndim == 1 and \
                scores.dtype.kind in "iu":
            return scores.astype(np.int64, copy=False)
        return None

    @property
    def classes(self) -> np.ndarray:
        """The index of the best class for each row (the class ids a model answers with); a row of NaN scores (a NaN
        input's) has none: an error."""
        ids = self.class_ids()
        return ids if ids is not None else self._finite_class_scores().argmax(axis=1)

    def _finite_class_scores(self) -> np.ndarray:
        """`class_scores()`, refused when a row holds NaN, for which no class is best (argmax answered 0)."""
        scores = self.class_scores()
        unscored = np.flatnonzero(np.isnan(scores).any(axis=1))
        if len(unscored):
            rows = ", ".join(map(str, unscored[:5])) + (", ..." if len(unscored) > 5 else "")
            raise OnnxkitError(f"{len(unscored)} row{'s' * (len(unscored) > 1)} ({rows}) scored NaN, so no class is "
                               "best; check those rows' inputs for NaN, or read the scores")
        return scores

    @property
    def labels(self) -> list[str] | None:
        """The name of the best class for each row, or None when the model names no classes (or is multi-label)."""
        if self.class_names is None or self.multi_label:
            return None
        classes = self.classes
        outside = (classes < 0) | (classes >= len(self.class_names))
        if outside.any():  # a negative id read a name from the end
            raise OnnxkitError(f"output {self.scores_name!r} holds class id {classes[outside][0]} (row "
                               f"{np.flatnonzero(outside)[0]}), outside the {len(self.class_names)} classes the model "
                               f"names ({first_few(self.class_names)}); fix its onnxkit.labels metadata or read "
                               ".classes")
        return [self.class_names[i] for i in classes]

    def top_k_indices(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best class indices per row, best first, and their scores: two [rows, k] arrays."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise OnnxkitError(f"top-k needs a whole number k >= 1, got {k!r}")
        scores = self._finite_class_scores()
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return best, np.take_along_axis(scores, best, axis=1)

    def top_k(self, k: int) -> list[list[tuple[str | int, float]]]:
        """For each row, the k best (class name or index, score) pairs, best first."""
        indices, scores = self.top_k_indices(k)
        names = self.class_names
        return [
            [(names[i] if names else i, s) for i, s in zip(row_i, row_s, strict=True)]
            for row_i, row_s in zip(indices.tolist(), scores.tolist(), strict=True)
        ]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """JSON-ready: {"outputs": nested lists by name, "labels" when named, "top_k" when asked}."""
        result: dict[str, Any] = {"outputs": {name: np.asarray(value).tolist() for name, value in self.outputs.items()}}
        if self.class_names is not None:
            result["labels"] = self.labels
        if top_k:
            result["top_k"] = [[{"label": label, "score": score} for label, score in row] for row in self.top_k(top_k)]
        return result
