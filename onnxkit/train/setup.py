"""What `fit` derives from its config, model and data before training (`Setup`): the model in trainable form and
the backend, the output and loss, standardisation and missing values, the data bound to the model's inputs and
checked against it, what trains, the frozen-feature cut, the steps and the monitor; each checked up front, so a bad
run is refused before any file is written; then the backend session it opens and the validation it runs."""

from __future__ import annotations

import contextlib
import functools
import glob
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

from onnxkit.autodiff.recurrent import UNFIXED_LENGTH
from onnxkit.autodiff.reverse import NoGradient
from onnxkit.batch_axis import AXES_HINT
from onnxkit.data import (
    Dataset,
    Split,
    model_inputs,
    numbered_classes,
)
from onnxkit.data.checks import check_class_labels, check_finite, check_numeric_targets
from onnxkit.data.split import SPLIT_NAMES
from onnxkit.data.text import TextSplit
from onnxkit.dims import dims_of
from onnxkit.errors import OnnxkitError, first_few, suggest
from onnxkit.evaluate import (
    LOSS_TASK,
    Scorer,
    check_targets,
    fixed_batch_size,
    label_names,
    model_outputs,
    output_task,
    padded,
    predictions,
    r2,
)
from onnxkit.graph_walks import ancestors, node_reads, opset, probability_logits, sigmoid_pair_logit, value_types
from onnxkit.metadata import imputed_medians
from onnxkit.runtime.session import error_reason, plain_session
from onnxkit.train import distributed
from onnxkit.train.backend import TrainingSession
from onnxkit.train.backends import DEFAULT, get_backend
from onnxkit.train.batchnorm_restore import (
    batch_norm_tensors,
    channel_statistics,
    fresh_batch_norms,
    with_batch_norms,
)
from onnxkit.train.callbacks import (
    MONITORS,
    Record,
)
from onnxkit.train.config import GraphAdapter, TrainConfig
from onnxkit.train.defaults import training_mode
from onnxkit.train.exporter_marks import computed_at_export, folded_batch_norms, padding_rows, unmarked_scalars
from onnxkit.train.frozen_features import cut, features
from onnxkit.train.impute import filled, gap_medians, gaps_line, impute_inputs
from onnxkit.train.losses import Loss, default_loss, get_loss
from onnxkit.train.problem import training_problem
from onnxkit.train.progress import Progress
from onnxkit.train.run_directory import RunDirectory
from onnxkit.train.schedules import Schedule, warmup_steps
from onnxkit.train.standardize import (
    FAR,
    input_scales,
    non_negative_output,
    scaled_targets,
    standardize_inputs,
    standardizes_itself,
    target_scale,
    uncentred,
    unscaled,
)
from onnxkit.train.trained_norms import trained_norm
from onnxkit.train.training_form import (
    find_parameters,
    needs_full_length,
    output_type,
    random_nodes,
    refuse_weights_in_attributes,
    select,
    sized_by_data,
    trainable_form,
    training_output,
)
from onnxkit.train.validation_sums import SummedValidation
from onnxkit.training_recipe import read_training_recipe

FIT_SAMPLE = 2048  # training rows run through a regression model to see whether it answers in the targets' units


class Setup:
    """Everything derived from the config, model and data before training: checked up front,
    so a bad run is refused before any file is written. `__init__` runs the steps in the order
    they depend on each other; the notes on the data come last, once it has passed its checks."""

    def __init__(
        self,
        run: RunDirectory,
        config: TrainConfig,
        model: onnx.ModelProto,
        dataset: Dataset,
        adapter: GraphAdapter | None,
        device: str,
        threads: int | None,
        progress: Progress,
    ) -> None:
        self.run, self.config, self.dataset, self.adapter = run, config, dataset, adapter
        self.threads, self.progress = threads, progress
        self.cached: dict[str, Any] = {}  # the frozen-feature cut's boundary and seconds, when one is made
        self.restored: list[str] = []  # the tensors of the BatchNorms put back (`_restore_batch_norms`)
        self._prepare_model_and_backend(model, device)
        with self._naming_the_labels():  # the data against the model
            _check_column_count(self.dataset, model_inputs(self.model), self.model,
                                training_output(self.model, self.config.output))
            self._choose_output_and_loss()
            self._fill_gaps()
            unscaled_note = self._choose_standardization()  # said last, so that an error is the only line
            self._impute_in_model()
            self._detect_probabilities()
            specs = model_inputs(self.model)  # the inputs the data is bound to
            self._check_splits()
            self._bind_splits(specs)
            self._check_fixed_batch(specs)
            self._check_text_length()
            self._size_by_data()
            self._name_classes()
        self._select()
        self._restore_batch_norms()
        self._check_batch_statistics()
        self._warn_about_weights()
        self._cache_frozen_features()
        self._plan_steps()
        self._choose_monitor()
        self._say_notes(unscaled_note)

    @contextlib.contextmanager
    def _naming_the_labels(self) -> Iterator[None]:
        """Errors about the data against the model end by saying which column was taken as the labels, when
        the file headed none so (a feature taken as the labels reads as a wrong loss or shape)."""
        try:
            yield
        except OnnxkitError as e:
            if not self.dataset.labels_from:
                raise
            raise OnnxkitError(f"{e} (the labels: {self.dataset.labels_from})", params=e.params) from e

    def _prepare_model_and_backend(self, model: onnx.ModelProto, device: str) -> None:
        """The model in trainable form (each change said in a line), the backend and its device, the adapter applied."""
        model, notes = trainable_form(model, self.config.model if self.config.model_sha256 else "the model")
        for note in notes:
            self.progress.line(note)
        self.backend = get_backend(self.config.backend)
        self.device = self.backend.resolve_device(device)
        self.model = self.adapter.apply(model) if self.adapter else model

    def _choose_output_and_loss(self) -> None:
        """The output the loss reads (its type and shape), the loss, and the task it trains for."""
        c, labels = self.config, self.dataset.train.labels
        self.output = training_output(self.model, c.output)
        refuse_weights_in_attributes(self.model, self.output)
        self.types = value_types(self.model)
        self.output_vi = output_type(self.types, self.model, self.output)
        self.shape = dims_of(self.output_vi.type) or ()  # the output's: a number, a name or None per axis
        self.named_task = output_task(self.model, c.output)  # the task the model's metadata names, if any
        self.loss: Loss = get_loss(c.loss) if c.loss else default_loss(self.named_task, self.shape, labels)
        self.loss.check_output(self.output_vi)
        self.loss = self.loss.along(self.output_vi, labels)  # the class axis of one id per position
        smoothing = c.label_smoothing
        if smoothing is None:  # not given: the model's training recipe's, where the loss is cross-entropy
            recipe = read_training_recipe(self.model, training_mode(c.train_only, c.adapter))
            smoothing = recipe.label_smoothing if recipe and self.loss.class_labels else None
        if smoothing:
            self.loss = self.loss.smoothed(smoothing)
        self.task = LOSS_TASK[self.loss.name]
        self.regression = self.task == "regression"  # whole-number targets too (a CSV of prices in dollars)

    def _choose_standardization(self) -> str | None:
        """Standardise the inputs (and regression targets) when asked, or for standardize=None when the data
        looks unscaled; the line that says what standardize=None found, if anything."""
        c, note = self.config, None
        if c.standardize is None:
            whole = not (c.freeze or c.train_only or self.adapter)
            c.standardize, note = self._standardize_unscaled(self.dataset, whole, self.regression)
        if c.standardize:  # (x - mean) / std in front of the inputs: the output and its type stay
            self.model = self._standardized(self.model, self.dataset, self.regression)
            self.types = value_types(self.model)
        self.target = self.model  # the graph the trained weights go back into
        self.target_scale = None
        if c.standardize and self.regression:
            targets = self._laid_out(self.dataset.train.labels)
            self.target_scale = target_scale(targets, self.shape)
            if targets.min() >= 0 and non_negative_output(self.model.graph, self.output):
                self.target_scale = uncentred(self.target_scale)
        return note

    def _fill_gaps(self) -> None:
        """Missing values (NaN) in a table's features: filled in the data with the training split's medians, which
        `_impute_in_model` then puts in front of the model (a model that fills them itself keeps its own)."""
        specs = model_inputs(self.model)
        self.medians = imputed_medians(self.model)
        fresh = not self.medians
        if fresh:
            self.medians = gap_medians(self.dataset, specs)
        if self.medians:
            if fresh:
                self.progress.line(gaps_line(self.dataset, specs, self.medians))
            self.dataset = filled(self.dataset, specs, self.medians)
        self.fills_gaps = fresh and bool(self.medians)

    def _impute_in_model(self) -> None:
        """`Where(IsNaN(x), median, x)` in front of the model (and of the standardisation), where `_fill_gaps`
        filled the data: the trained model then takes missing values wherever it runs."""
        if self.fills_gaps:
            self.model = self.target = impute_inputs(self.model, self.medians)
            self.types = value_types(self.model)

    def _detect_probabilities(self) -> None:
        """Whether the output is a classifier's Softmax or Sigmoid, whose logits the loss and its reports read."""
        activation, graph = self.loss.reads_logits_of, self.model.graph
        self.probabilities = bool(activation) and (
            probability_logits(graph, self.output, len(self.shape), opset(self.model), activation, self.loss.axis)
            is not None or (activation == "Softmax" and sigmoid_pair_logit(graph, self.output) is not None))

    def _check_splits(self) -> None:
        """Refuse non-finite features or targets, and class labels the output cannot score, in every split
        (before binding, which casts labels)."""
        loss, shape = self.loss, self.shape
        classes = shape[loss.axis] if loss.class_labels and isinstance(shape[loss.axis], int) else None
        self.num_classes = classes  # cross-entropy's, on its class axis
        binary = self.task == "binary" and len(shape) == 2 and shape[1] == 1  # one logit: classes 0 and 1
        if (classes or binary) and len(shape) == 2 and not _named_classes(self.model):
            self.dataset = numbered_classes(self.dataset, classes or 2)
        dataset = self.dataset
        for name in SPLIT_NAMES:
            split = dataset.split(name)
            check_finite(f"{dataset.name}, {name} split", split.inputs)
            if self.regression:
                check_finite(f"{dataset.name}, {name} split", {"labels": split.labels}, role="target array")
            else:
                ids = split.labels.reshape(-1) if loss.class_labels and len(shape) > 2 else split.labels
                check_class_labels(f"{dataset.name}, {name} split", ids, classes, output=self.output,
                                   binary=self.task == "binary", class_names=dataset.label_names)
                self._check_binary_label_shape(f"{dataset.name}, {name} split", split.labels)

    def _check_binary_label_shape(self, name: str, labels: np.ndarray) -> None:
        """0/1 labels of a binary task hold one label per output value (a [N, 3] matrix for a one-logit output
        failed at the first step: 'Got invalid dimensions for input: labels ... Got: 3 Expected: 1')."""
        per_row = self.shape[1:]
        if self.task != "binary" or not all(isinstance(d, int) for d in per_row) or labels.ndim < 2:
            return
        if labels.size != len(labels) * math.prod(per_row):
            raise OnnxkitError(f"data {name!r}: labels have shape {list(labels.shape)} but output {self.output!r} has "
                               f"shape [batch, {', '.join(map(str, per_row))}]; give one 0/1 label per output value")

    def _bind_splits(self, specs: list) -> None:
        """The training and validation splits bound to the model's inputs, with the labels the loss takes."""
        self.splits = {name: self._bind(self.dataset.split(name), specs) for name in ("train", "validation")}
        if self.regression:  # after binding, whose errors about shapes say more
            check_numeric_targets(self.dataset.name, self.dataset.label_names, self.loss.name)
        if len(self.splits["train"]) == 0:
            raise OnnxkitError(f"the training split of {self.dataset.name!r} is empty; give more data")

    def _check_fixed_batch(self, specs: list) -> None:
        """A model whose inputs fix the batch size trains in whole batches of exactly that size (each
        epoch leaves out its last partial one) and validates in batches of it, the last one padded."""
        self.fixed = fixed_batch_size(specs)  # such a model runs whole batches only
        fixed, train = self.fixed, len(self.splits["train"])
        if fixed is None:
            return
        dynamic = "export the model with a dynamic batch dimension"
        if fixed != self.config.batch_size:
            raise OnnxkitError(f"the model's inputs have a fixed batch size of {fixed}; use batch_size={fixed} "
                               f"or {dynamic}")
        if train < fixed:
            raise OnnxkitError(f"the model's inputs have a fixed batch size of {fixed}, but the training split has "
                               f"only {train} examples; give more data or {dynamic}")

    def _check_text_length(self) -> None:
        """Refuse, in one line, a text length the model cannot run (past its position table: an error in a step,
        inside the graph), with the longest it does run: one row at the data's full length (max_length, what a
        split's longest text may reach) is tried first."""
        train = self.splits["train"]
        if not isinstance(train, TextSplit) or self.output not in {o.name for o in self.model.graph.output}:
            return
        session = plain_session(self.model.SerializeToString())

        def runs(length: int) -> bool:
            try:
                session.run([self.output], train.first_row(length))
            except Exception:  # noqa: BLE001 - any failure: a length it cannot take
                return False
            return True

        longest = train.width
        if runs(longest) or not runs(1):  # one that fails at any length fails on its own later, saying why
            return
        low, high = 1, longest  # runs(low), not runs(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if runs(middle) else (low, middle)
        raise OnnxkitError(f"the model runs texts of at most {low} tokens (its position table, likely), but these "
                           f"are cut at {longest}; give max_length={low}", params=["max_length"])

    def _size_by_data(self) -> None:
        """The inputs' dynamic sizes past the batch fixed to the data's (its sequence length, image size); text
        at its full length for a model whose gradients need fixed sizes (`needs_full_length`)."""
        self.padded_text = needs_full_length(self.model) and not all(s.fixed_shapes for s in self.splits.values())
        if self.padded_text:  # and the model trained says so, for eval and predict to pad alike (PADDING_KEY)
            self.splits = {name: split.with_fixed_shapes() for name, split in self.splits.items()}
        sized = sized_by_data(self.model, self.splits.values())
        self.unsized = None if sized is self.model else self.model  # the model as given, for `_check_loads`
        if sized is not self.model:
            self.model, self.types = sized, value_types(sized)

    def _name_classes(self) -> None:
        """The class names the trained model is labelled with: the data's, else the model's."""
        self.names = _trained_names(self.dataset.label_names or label_names(self.model), self.num_classes)

    def _select(self) -> None:
        """What trains; refuses ops without a gradient in the backend and options it cannot run."""
        c, model = self.config, self.model
        params = find_parameters(model)
        # a BatchNorm put back trains with its layer (only a trained one gets one) whatever train_only names
        default = [*self.adapter.trainable(model), *self.restored] if self.adapter else None
        train_only = [*c.train_only, *map(glob.escape, self.restored)] if c.train_only else ()
        to_come = () if self.restored else batch_norm_tensors(folded_batch_norms(model, params.names))
        self.selection = select(model, params, self.output, freeze=c.freeze, train_only=train_only, default=default,
                                to_come=to_come)
        missing = self.backend.unsupported(model, self.selection.trainable, self.output)
        if missing:
            op, node = missing[0]
            other = f", or use the default backend (backend={DEFAULT})" if self.backend.name != DEFAULT else ""
            looped = [n for node in model.graph.node if node.op_type in ("Loop", "Scan")
                      for n in sorted((node_reads(node) - set(node.input)) & set(self.selection.trainable))]
            if op.endswith(UNFIXED_LENGTH) and self.unsized is not None:  # the data fixed every input axis past 0
                raise OnnxkitError(f"op {op} (node {node}) has no gradient: the data fixes every input axis but the "
                                   f"first, its rows, so the sequence runs along them; {AXES_HINT}")
            if op in ("Loop", "Scan") and looped:  # the weight itself is read in the loop: freezing before it misses
                other += (f"; its body reads {first_few(looped)}: PyTorch's nn.EmbeddingBag exports so, which "
                          "nn.Embedding and a mean over the tokens train as")
            self._check_loads()  # an op onnxruntime lacks altogether: the model's fault, which freezing cannot fix
            raise OnnxkitError(
                f"op {op} (node {node}) has no gradient in the {self.backend.name} backend; keep the parameters "
                f"before it frozen (freeze / train_only){other}", params=["freeze", "train_only"]
            )
        self.optimizer = c.optimizer_spec()
        self.backend.refuse_optimizer(self.optimizer, c.clip_grad_norm)
        self.other_floats = [n for n in params.other_floats if n in ancestors(model, self.output)]
        self.sinusoids = params.sinusoids
        self.trainable_count = sum(params.sizes[n] for n in self.selection.trainable)
        self.frozen_count = sum(params.sizes[n] for n in self.selection.frozen)

    def _restore_batch_norms(self) -> None:
        """A BatchNorm again after each trained layer PyTorch's exporter folded one into (`batchnorm_restore`),
        said in a line; then what trains is chosen again."""
        folded = folded_batch_norms(self.model, self.selection.trainable)
        lone = [node for node in folded if self._one_value_a_channel(node.output[0])]
        if lone:
            layers = first_few([node.name or node.output[0] for node in lone])
            self.progress.line(f"warning: BatchNorm stays folded into {layers}"
                               ": in batches of one row it would normalise each channel over one value (every value"
                               " 0); train with batch_size=2 or more (a fixed batch of 1: re-export it dynamic) to"
                               " have it back")
            folded = [node for node in folded if node not in lone]
        if not folded:
            return
        fresh = fresh_batch_norms(self.model, folded)
        measured = [node.output[0] for node in folded if node.output[0] not in fresh]
        stats = channel_statistics(self.model, self.dataset.train, measured) if measured else {}
        self.model, self.target = (with_batch_norms(m, stats, fresh) for m in (self.model, self.target))
        self.restored = batch_norm_tensors(folded)
        self.types = value_types(self.model)
        self._select()
        names = first_few([node.name or node.output[0] for node in folded])
        started = ("from the training data's statistics" if not fresh else "as the fresh BatchNorm the export's was "
                   "(weight 1, bias 0)" if not measured else f"as a fresh BatchNorm (weight 1, bias 0) where the "
                   f"export's was ({len(fresh)} of them: a zero shift), else from the training data's statistics")
        self.progress.line(f"PyTorch's exporter folded BatchNorm into {len(folded)} layer{'s' * (len(folded) > 1)} "
                           f"({names}): each trains with a BatchNorm after it again, started {started} so that the "
                           "model computes what it did, and model.onnx keeps them (a CNN on drawn shapes: 27.5% "
                           "without, 100% with, as PyTorch trains the module)")

    def _warn_about_weights(self) -> None:
        """A warning for weights that cannot train as the model was exported: float64 or float16, folded BatchNorms."""
        progress = self.progress
        for note in getattr(self.adapter, "notes", list)():
            progress.line(note)
        if self.other_floats:
            progress.line(f"warning: weights in float64 or float16 stay fixed: training runs in float32 "
                          f"({first_few(self.other_floats)}); to train them, store them as float32 (PyTorch: "
                          "keep the parameter float32 and cast inside forward)")
        fixed = [n for n in self.sinusoids if n in self.selection.frozen]
        if fixed and not self.config.train_only:
            progress.line(f"sinusoidal position tables stay frozen ({first_few(fixed)}): sin and cos of the position, "
                          "which Hugging Face's and fairseq's models keep fixed (requires_grad=False); --train-only "
                          "naming them trains them (train_only= in fit; '*': every parameter)")
        scalars = unmarked_scalars(self.model, self.selection.trainable)
        if scalars:
            progress.line(f"the export's scalar weights train ({first_few(scalars)}): a TorchScript export does not "
                          "say which are nn.Parameters and which buffers; freeze the buffers (--freeze NAME, "
                          "freeze= in fit)")
        drawn = random_nodes(self.model, self.output)
        if drawn:
            progress.line(f"warning: the model draws random numbers ({first_few(drawn)}; PyTorch's dynamo exporter "
                          "writes nn.Dropout2d/3d in training mode so): they stay random in training whatever "
                          "--no-dropout (dropout=False in fit) says, and in the trained model; export the module after "
                          "eval()")
        padded = padding_rows(self.model, self.selection.trainable) if not self.backend.keeps_padding_rows else []
        if padded:
            progress.line(f"warning: the {self.backend.name} backend trains the padding rows that PyTorch's "
                          f"nn.Embedding(padding_idx) keeps ({first_few(padded)}); the default backend keeps them")
        if self.selection.updated_buffers and not self.backend.unbiased_running_var:
            progress.line(f"warning: the {self.backend.name} backend updates BatchNorm's running variance with the "
                          "batch's population variance, as ONNX defines it (PyTorch and the default backend: the "
                          "unbiased one; at a batch of 8 values per channel, 12.5% apart)")
        computed = computed_at_export(self.model, self.selection.trainable)
        if computed:
            progress.line(f"warning: {computed}")

    def _cache_frozen_features(self) -> None:
        """With cache_features (no adapter, no fixed batch size): train only the graph after the frozen part,
        on that part's output computed once."""
        if not self.config.cache_features or self.adapter or self.fixed is not None:
            return
        trained = [*self.selection.trainable, *self.selection.updated_buffers]
        rows = sum(len(s) for s in self.splits.values())
        split = cut(self.model, self.output, trained, self.types, rows)
        if split is None:
            return
        started = time.perf_counter()
        self.progress.line(f"running the part before the trained layers once over {rows} examples to cache its output")
        batch = self.config.eval_batch_size or max(self.config.batch_size, 64)
        run = self.backend.inference(split.prefix, device=self.device, threads=self.threads)
        cached = {name: features(split.prefix, self.dataset.split(name), run, batch) for name in self.splits}
        self.model, self.types = split.head, value_types(split.head)
        self.splits = {name: self._bind(s, model_inputs(split.head)) for name, s in cached.items()}
        self.cached = {"boundary": split.boundary, "seconds": round(time.perf_counter() - started, 2)}

    def _check_batch_statistics(self) -> None:
        """Refuse batches of one row (a data-parallel worker's share of one) where a BatchNormalization trains on its
        batch's statistics over one value a channel (an [N, C] input, or one whose sizes past the channels are all
        1): every value normalises to 0 and the model learns nothing (PyTorch refuses it alike: 'Expected more than
        1 value per channel')."""
        for node in self.model.graph.node:
            if node.op_type != "BatchNormalization" or node.input[3] not in self.selection.updated_buffers:
                continue
            if self._one_value_a_channel(node.input[0]):
                workers = distributed.size()
                rows = "batches of one row" if workers == 1 else f"a share of one row ({workers} workers split a batch)"
                fix = ("re-export the model with a dynamic batch dimension (PyTorch: dynamic_axes or dynamic_shapes)"
                       if self.fixed else f"use batch_size={2 * workers} or more")
                raise OnnxkitError(f"BatchNormalization {node.name or node.output[0]!r} would normalise each channel "
                                   f"over one value in {rows}, which makes every value 0; {fix}, or "
                                   f"keep its running statistics as they are (freeze={node.input[3]!r}: it then "
                                   "normalises with them)", params=["batch_size"])

    def _one_value_a_channel(self, name: str) -> bool:
        """Whether the value `name` holds one number a channel in each batch: batches (or a data-parallel worker's
        share) of one row, and its sizes past the channels all 1 ([N, C], or a 1 x 1 image)."""
        value = self.types.get(name)
        if value is None or distributed.smallest_share(self.fixed or self.config.batch_size) > 1:
            return False
        return all(d.HasField("dim_value") and d.dim_value == 1 for d in value.type.tensor_type.shape.dim[2:])

    def _plan_steps(self) -> None:
        """Optimizer steps per epoch, the number of epochs, and the learning-rate schedule over all steps."""
        c = self.config
        batches = self.splits["train"].num_batches(c.batch_size, drop_last=self.fixed is not None)
        self.steps_per_epoch = -(-batches // c.grad_accumulation)
        total_steps = c.steps or self.steps_per_epoch * c.epochs
        self.epochs = c.epochs if not c.steps else math.ceil(c.steps / self.steps_per_epoch)
        self.schedule = Schedule(c.schedule, c.lr, total_steps, warmup_steps(c.warmup, total_steps))
        say, warmup = self.progress.line, self.schedule.warmup_steps
        if warmup > total_steps:
            say(f"warning: the warm-up ({warmup} steps) is longer than the run ({total_steps} steps): the learning "
                f"rate ends at {self.schedule.lr(total_steps - 1):.3g} of {c.lr:g}; give a shorter --warmup (warmup= "
                "in fit), or a fraction of the run (0.1)")
        if c.grad_accumulation > batches:
            say(f"warning: --grad-accum {c.grad_accumulation} is more than an epoch's {batches} batches: each step "
                f"takes the epoch's {batches}; use --grad-accum {batches} or less (grad_accumulation= in fit)")

    def _choose_monitor(self) -> None:
        """The metric that picks the best epoch (and stops early): refused when the run cannot report it."""
        has_val = len(self.splits["validation"]) > 0
        self.monitor = self.config.monitor or ("val_loss" if has_val else "train_loss")
        if self.monitor not in MONITORS:
            raise OnnxkitError(f"unknown metric to monitor {self.monitor!r}; choose from {', '.join(MONITORS)}."
                               f"{suggest(self.monitor, MONITORS)}", params=["monitor"])
        if self.monitor.startswith("val_") and not has_val:
            raise OnnxkitError(f"cannot monitor {self.monitor}: the validation split is empty")
        if self.monitor in ("val_accuracy", "val_macro_f1") and self.task == "regression":
            raise OnnxkitError(f"{self.monitor} needs a classification loss; monitor val_loss instead")

    def _say_notes(self, unscaled_note: str | None) -> None:
        """The lines about the data (unscaled, nothing held out, one class, two-valued targets), once it has
        passed every check."""
        if unscaled_note:
            self.progress.line(unscaled_note)
        if not len(self.dataset.validation) and not len(self.dataset.test):
            self.progress.line(f"warning: the validation and test splits are empty ({len(self.dataset.train)} "
                               "examples in all): nothing scores the model on data it did not train on")
        if self.dataset.texts_read:
            self.progress.line(self.dataset.texts_read)
        for note in self.dataset.notes:
            self.progress.line(f"warning: {note}")
        if not self.regression:
            self._warn_one_class(self.dataset)
            self._warn_unseen_classes(self.dataset)
            self._warn_unused_outputs(self.dataset)
        elif not (self.config.loss or self.named_task):
            self._note_two_valued_targets(self.dataset)
            self._note_class_ids_of_another_output(self.dataset)

    def _bind(self, split: Split, specs: list) -> Split:
        """`split` fed as the inputs `specs` take, with the labels the loss takes."""
        bound = split.feeds_for(specs)  # a new split of the same class (text splits keep padding per batch)
        bound.labels = self.targets(split.labels)
        return bound

    def _laid_out(self, labels: np.ndarray) -> np.ndarray:
        """`labels` as the loss takes them (its errors name raw values)."""
        try:
            return self.loss.labels_for(labels, self.shape)
        except OnnxkitError as e:
            raise OnnxkitError(f"{e}{self._other_output_fits(labels)}", params=e.params) from e

    def _other_output_fits(self, labels: np.ndarray) -> str:
        """'; output 'reg' [batch, 1] fits them: ...' when the output was not chosen and another output of the model
        takes these labels (a PyTorch export returning (class scores, value) trained its first), else ''."""
        if self.config.output:
            return ""
        for out in self.model.graph.output:
            dims = dims_of(out.type) or ()
            if out.name == self.output or not dims:
                continue
            with contextlib.suppress(OnnxkitError):
                self.loss.labels_for(labels, dims)
                shown = ", ".join("?" if d is None else str(d) for d in dims)
                return f"; the model's output {out.name!r} [{shown}] fits them: train that one, output={out.name!r}"
        return ""

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """The labels training sees, as the loss takes them: regression targets standardised with --standardize."""
        labels = self._laid_out(labels)
        return labels if self.target_scale is None else scaled_targets(labels, self.target_scale)

    def _warn_one_class(self, dataset: Dataset) -> None:
        """One line when the training split holds a single class: the model can only learn to answer it."""
        labels = np.asarray(dataset.train.labels)  # min == max: np.unique would import numpy.ma (7-11 ms)
        if labels.size and labels.min() == labels.max():
            names, k = self.names, int(labels.flat[0])
            shown = repr(names[k]) if names and k < len(names) else str(k)
            self.progress.line(f"warning: every training example is of class {shown}; the model can only learn to "
                               "answer it (give examples of the other classes)")

    def _warn_unseen_classes(self, dataset: Dataset) -> None:
        """One line when classes of the validation or test split are in no training example (5 rows of iris: the
        test's class never trained, 0% with the best epoch the untrained one)."""
        train = np.asarray(dataset.train.labels).ravel()
        held = np.concatenate([np.asarray(s.labels).ravel() for s in (dataset.validation, dataset.test)])
        if train.dtype.kind not in "iu" or held.dtype.kind not in "iu" or not train.size or not held.size:
            return
        train, held = train[train >= 0], held[held >= 0]  # (an ignore index, -100, counts as no class)
        top = int(max(train.max(initial=0), held.max(initial=0))) + 1
        unseen = np.flatnonzero((np.bincount(held, minlength=top) > 0) & (np.bincount(train, minlength=top) == 0))
        if unseen.size:
            names = [repr(self.names[k]) if self.names and k < len(self.names) else str(k) for k in unseen.tolist()]
            self.progress.line(f"warning: class{'es' * (len(names) > 1)} {first_few(names)} of the validation or "
                               f"test split {'are' if len(names) > 1 else 'is'} in no training example "
                               f"({len(train)} in the training split): the model cannot learn "
                               f"{'them' if len(names) > 1 else 'it'}; give more examples of each class")

    def _warn_unused_outputs(self, dataset: Dataset) -> None:
        """One line when the data names fewer classes than the model has scores and the model names none (a
        1000-class ImageNet export trained on 3 class folders): the extra scores only learn to be low."""
        named, classes = dataset.label_names, self.num_classes
        if named and classes and len(named) < classes and not _named_classes(self.model):
            extra = (f"score {len(named)} is" if classes - len(named) == 1 else
                     f"scores {len(named)}-{classes - 1} are")  # not "scores 2-2 are"
            self.progress.line(f"warning: the data has {len(named)} classes ({first_few(named)}) and the model "
                               f"{classes} class scores: {extra} of no class and only learn"
                               f"{'s' * (classes - len(named) == 1)} to be low; give the model a {len(named)}-way "
                               f"output (re-export it with {len(named)} classes) to train one of the data's size")

    def _note_class_ids_of_another_output(self, dataset: Dataset) -> None:
        """One line when the whole-number targets the default output trains a regression on are class ids of another
        output's scores (a PyTorch export returning (value, logits) fit its value to 3 classes' ids, unsaid)."""
        labels = np.asarray(dataset.train.labels)
        if self.config.output or labels.dtype.kind not in "iu" or not labels.size or labels.min() < 0:
            return
        for out in self.model.graph.output:
            dims = dims_of(out.type) or ()
            if out.name != self.output and len(dims) == 2 and dims[1] == labels.max() + 1 > 2:
                self.progress.line(f"warning: output {self.output!r} trains a regression on the labels (loss mse), "
                                   f"which look like class ids of output {out.name!r} [batch, {dims[1]}]: "
                                   f"--model-output {out.name} (output={out.name!r} in fit) trains that one")
                return

    def _note_two_valued_targets(self, dataset: Dataset) -> None:
        """One line when whole-number targets a regression was chosen for take two values only (-1
        and 1, say): a binary classifier's labels, which need to be 0 and 1 to be taken as such; or
        when float targets are 0.0 and 1.0 only (PyTorch's BCEWithLogitsLoss takes its labels so)."""
        labels = np.asarray(dataset.train.labels)
        if labels.dtype.kind not in "iuf" or not labels.size:
            return
        low, high = labels.min(), labels.max()  # np.unique would import numpy.ma (7-11 ms)
        if low == high or not ((labels == low) | (labels == high)).all():
            return
        if labels.dtype.kind == "f" and (low, high) == (0, 1):
            self.progress.line("warning: the targets are 0.0 and 1.0 only: this trains a regression on them (loss "
                               "mse); for 0/1 labels (binary or multi-label), give them as integers or use loss "
                               "bce-with-logits")
        elif labels.dtype.kind in "iu":
            self.progress.line(f"warning: the targets take two values only, {low} and {high}: this trains a "
                               "regression on them (loss mse); for a binary classifier, map them to 0 and 1")

    def _standardize_unscaled(self, dataset: Dataset, whole: bool, regression: bool) -> tuple[bool, str | None]:
        """standardize=None: whether to standardise (clearly unscaled data or regression targets, a model whose
        weights show no training, and the whole model trains: a frozen part would not expect standardised inputs),
        and the line that says so."""
        found = unscaled(dataset.train, model_inputs(self.model), regression=regression, columns=dataset.columns)
        if not found or standardizes_itself(self.model):  # raw data is what such a model takes
            return False, None
        evidence = trained_norm(self.model)
        if evidence:  # a pretrained backbone, a new head or not: its first layers learnt from such raw values
            return False, (f"the data looks unscaled ({found}), but the model's weights were trained ({evidence}), "
                           "so it trains on the raw values; --standardize (standardize=True in fit) standardizes "
                           "them anyway")
        if not whole:
            return False, (f"warning: the data looks unscaled ({found}); train with --standardize "
                           "(standardize=True in fit)")
        trained = self._answers_in_target_units(dataset) if regression else self._classifies_already(dataset)
        if trained:
            already = "answers in the targets' units" if regression else "classifies it"
            return False, (f"the data looks unscaled ({found}), but the model already {already} ({trained}), so it "
                           "trains on the raw values; --standardize (standardize=True in fit) standardizes them "
                           "anyway")
        return True, (f"standardizing the data, which looks unscaled ({found}); --no-standardize "
                      "(standardize=False in fit) trains on the raw values")

    def _outputs_before_training(self, dataset: Dataset, task: str | None = None) -> tuple[Split, np.ndarray] | None:
        """A sample of the training split and the model's outputs on it before any training (the targets checked
        against them for `task`), or None: an output read inside the graph, or data whose checks, next, say what
        is wrong with it."""
        if self.output not in {o.name for o in self.model.graph.output}:
            return None
        sample = Split("train", *next(dataset.train.batches(FIT_SAMPLE)))
        try:
            outputs = model_outputs(self.model, sample, self.output)
            if task is not None:
                check_targets(sample.described, sample.labels, outputs, task, self.output)
        except OnnxkitError:
            return None
        return sample, outputs

    def _classifies_already(self, dataset: Dataset) -> str | None:
        """What shows, before any training, that a classifier was trained on features like these (standardised, a
        model fit to the raw values lost what it knew: iris 97% -> 92% in one epoch at lr 1e-5), or None: its
        accuracy on a sample of the training split 80% or more of the way from the majority class's share to 100%
        (fresh MLPs score about chance on iris' raw features, 69% at most in 120, or the majority's share by
        answering it)."""
        before = self._outputs_before_training(dataset)
        if before is None:
            return None
        sample, outputs = before
        labels = np.asarray(sample.labels).reshape(-1)
        if outputs.ndim != 2 or labels.dtype.kind not in "iu" or len(outputs) != len(labels) or not len(labels):
            return None
        guessed = predictions(outputs, "binary" if outputs.shape[1] == 1 else "classification")
        accuracy, majority = float(np.mean(guessed == labels)), float(np.bincount(labels).max() / len(labels))
        return f"{accuracy:.0%} accuracy before training" if accuracy >= majority + 0.8 * (1 - majority) else None

    def _answers_in_target_units(self, dataset: Dataset) -> str | None:
        """What shows, before any training, that a regression model was trained on targets like these
        (fitting it to standardized ones would start it thousands of loss units off: a scikit-learn
        MLPRegressor went from R² -1.1 to -723), or None. A fresh model's outputs are a small fraction
        of the targets' scale on scaled inputs; on unscaled ones they can be anything, and only its R²
        counts, over a higher bar (fresh MLPs on make_friedman2's raw features reached up to 0.36)."""
        before = self._outputs_before_training(dataset, "regression")
        if before is None:
            return None
        sample, outputs = before
        y, out = (np.asarray(a, np.float64).reshape(len(sample.labels), -1) for a in (sample.labels, outputs))
        # the bars below were measured with a mean counting beyond 10 stds: a fresh MLP's outputs on
        # diabetes' raw features (means 5.6 stds out) scored R² -2 at best, and a pretrained one 0.3-0.4. Features
        # on a tiny scale do not count: they make a fresh model's outputs small, not anything (scikit-learn's
        # diabetes, stds 0.048: counted, a pretrained MLPRegressor at R² 0.47 was standardised to R² -5,500)
        raw_features = unscaled(dataset.train, model_inputs(self.model), regression=False, offset=FAR, small=0,
                                off_centre=FAR)
        fit = r2(out, y)
        if fit is not None and fit > (0.5 if raw_features else 0.2):
            return f"R² {fit:.2f} before training"
        spread, gap = y.std(axis=0), np.abs(out.mean(axis=0) - y.mean(axis=0))
        y, out = y - y.mean(axis=0), out - out.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            correlation = (y * out).sum(axis=0) / np.sqrt((y * y).sum(axis=0) * (out * out).sum(axis=0))
        # fresh MLPs' outputs on diabetes' raw features correlated with its targets up to |0.33|
        near = (out.std(axis=0) > spread / 10) & (gap < 2 * spread) & (correlation >= 0.5)
        if near.all() and not raw_features:
            return f"its outputs correlate {float(correlation.min()):.2f} with them before training"
        return None

    @staticmethod
    def _standardized(model: onnx.ModelProto, dataset: Dataset, regression: bool) -> onnx.ModelProto:
        """`model` taking standardized float inputs; the same model where only a regression's targets can be
        (integer inputs: counts, token ids)."""
        if standardizes_itself(model):
            raise OnnxkitError("the model already standardizes the data it takes (it was trained with standardize "
                               "on, or starts with a scikit-learn scaler), so it takes raw values; train it with "
                               "standardize off", params=["standardize"])
        scales = input_scales(dataset.train, model_inputs(model))
        if not scales and not regression:
            raise OnnxkitError("standardize needs a float feature input, but the model's inputs are "
                               f"{', '.join(s.name for s in model_inputs(model))} (token ids or other integers): "
                               "train it with standardize off", params=["standardize"])
        return standardize_inputs(model, scales)

    def _labels_name(self) -> str:
        taken = {v for node in self.model.graph.node for v in (*node.input, *node.output)}
        taken |= {i.name for i in self.model.graph.input}
        return "labels" if "labels" not in taken else "onnxkit.labels"

    def open_session(self, resuming: bool) -> TrainingSession:
        """A session from the run's last checkpoint, or on newly built artifacts."""
        c, run = self.config, self.run
        if resuming:
            return self.backend.open(run.artifacts, device=self.device, checkpoint=run.last_checkpoint,
                                     threads=self.threads)
        problem = training_problem(
            self.model,
            self.output_vi,
            self.loss,
            self.selection,
            self.optimizer,
            self.backend,
            types=self.types,
            clip_grad_norm=c.clip_grad_norm,
            grad_accumulation=c.grad_accumulation,
            dropout=c.dropout,
            seed=c.seed,
            labels_name=self._labels_name(),
            validation_classes=self._summed_classes(),
            batch_size=c.batch_size,
        )
        try:
            self.backend.build(problem, run.artifacts)
        except NoGradient as e:  # a rule refusing this node's attributes or shapes (no rule at all: _select says)
            raise OnnxkitError(f"{e.what}; keep the parameters before it frozen (freeze / train_only)",
                               params=["freeze", "train_only"]) from e
        except OnnxkitError:  # ORT-training's build infers shapes: data of sizes the model cannot take fails there
            self._check_loads()
            raise
        try:
            return self.backend.open(run.artifacts, device=self.device, threads=self.threads)
        except OnnxkitError:
            self._check_loads()  # the training graphs keep the model's opset: one too new is the model's fault
            raise

    def _check_loads(self) -> None:
        """Raise onnxruntime's refusal of the model itself, named as the user's file (an opset or IR version newer
        than it reads, an op of a domain it lacks); asked only once something built from the model failed, so a
        model that loads costs no session here. A model that loads as given but not with its free axes sized as the
        data is (sequences longer than its position table) is the data's fault: that was named the file's."""
        try:
            plain_session(self.model.SerializeToString(), name=self.config.model)
        except OnnxkitError as e:
            if getattr(self, "unsized", None) is None:
                raise
            plain_session(self.unsized.SerializeToString(), name=self.config.model)  # the model's own refusal
            train = self.splits["train"].inputs
            shapes = ", ".join(f"{name} [batch, {', '.join(map(str, np.shape(train[name])[1:]))}]" for name in train)
            raise OnnxkitError(f"{self.config.model} cannot take the data's shapes ({shapes}): "
                               f"{error_reason(e.__cause__) if e.__cause__ else e}; give data of the sizes the model "
                               "takes (`onnxkit eval MODEL --data DATA` names where it fails)") from e

    @functools.cached_property
    def _validation(self) -> tuple[list[tuple[dict[str, np.ndarray], int]], Scorer, SummedValidation | None]:
        """The validation batches (padded to a fixed batch size, with their real row counts), the scorer of their
        targets and, for a classifier on the CPU run in batches of its own sizes, their scoring by the eval graph's
        sums (`validation_sums`; numpy's scorer stays for sessions whose eval graph has none): made once, every epoch
        evaluates the same ones."""
        size = self.fixed or self.config.eval_batch_size or self.config.batch_size
        split = self.splits["validation"]
        batches = [(padded(feeds, self.fixed), len(labels)) for feeds, labels in split.batches(size)]
        targets = self.targets(self.dataset.validation.labels)
        scorer = Scorer(targets, self.task, loss=self.loss.name, num_classes=self.num_classes,
                        probabilities=self.probabilities, axis=self.loss.axis)
        summed = None
        if scorer.classes and len(self.shape) == 2 and not self.fixed and self.device == "cpu":
            summed = SummedValidation(targets, scorer.classes, [rows for _, rows in batches])
        return batches, scorer, summed

    def _summed_classes(self) -> int | None:
        """The classes whose validation metrics the eval graph is to sum (`validation_sums`), else None (data-parallel
        ranks score their shares' gathered logits: `DataParallelSession.eval_step`)."""
        if not len(self.splits["validation"]) or distributed.current_world():
            return None
        summed = self._validation[2]
        return summed.classes if summed else None

    def validate(self, session: TrainingSession) -> Record:
        """The epoch record's validation entries."""
        batches, scorer, summed = self._validation
        if summed is not None and session.scores_in_graph:
            metrics = summed(session, batches)
        else:
            metrics = scorer([session.eval_step(feeds)[:rows] for feeds, rows in batches])
        return {f"val_{k}": metrics[k] for k in ("loss", "accuracy", "macro_f1") if k in metrics}


def _check_column_count(dataset: Dataset, specs: list, model: onnx.ModelProto, output: str) -> None:
    """A CSV's feature columns against a model of one [batch, N] input, said in columns (the shape error's
    '[304, 13] but [batch, 8]; reshape the data (or pick the matching dataset, ...)' told a CSV's user little)."""
    columns, shape = dataset.columns, specs[0].shape if len(specs) == 1 else None
    if not columns or not shape or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] == len(columns):
        return
    raise OnnxkitError(f"data {dataset.name!r} has {len(columns)} feature columns ({first_few(list(columns), 4)}) "
                       f"but model input {specs[0].name!r} takes {shape[1]} values a row; build the model with "
                       f"{len(columns)} inputs, or leave columns out of the file"
                       + _several_targets(model, output, shape[1], len(columns) - shape[1] + 1,
                                           dataset.train.labels))


def _several_targets(model: onnx.ModelProto, output: str, features: int, extra: int, labels: np.ndarray) -> str:
    """'; ... save an .npz' when `output` takes `extra` values a row, as many as the CSV's columns past the model's
    `features`, and the label column holds no class ids of them (linnerud's 3 targets in a CSV: 2 of them were read
    as features, the last as the labels), else ''."""
    found = next((o for o in model.graph.output if o.name == output), None)
    dims = (dims_of(found.type) or ()) if found else ()
    fixed = len(dims) >= 2 and all(isinstance(d, int) and d > 0 for d in dims[1:])
    if not fixed or extra < 2 or math.prod(dims[1:]) != extra or labels.dtype.kind not in "iuf" \
            or labels.dtype.kind in "iu" and 0 <= labels.min() and labels.max() < extra:
        return ""
    return (f"; output {output!r} takes {extra} targets a row, and a CSV holds one label column: save the features "
            f"and targets as an .npz (x [N, {features}], labels [N, {extra}])")


def _named_classes(model: onnx.ModelProto) -> bool:
    """Whether `model` names its classes other than 0, 1, ... (so the data's numbers must be its classes)."""
    names = label_names(model)
    return bool(names) and names != [str(i) for i in range(len(names))]


def _trained_names(names: list[str] | None, classes: int | None) -> list[str] | None:
    """The class names a trained model is labelled with: `names` (the data's, in the model's order where it
    names them), a class the data did not name keeping its number ("class 2" where the data calls another
    class "2"), so predict finds a name for every score, and no two scores share one."""
    if names and classes and len(names) < classes:
        return [*names, *(str(i) if str(i) not in names else f"class {i}" for i in range(len(names), classes))]
    return names

