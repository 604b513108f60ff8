"""A training session over the onnx backend's artifacts: three InferenceSessions (training,
optimizer, eval) with IOBinding.

State lives in OrtValues on the training device between steps: the flat parameters and
each optimizer slot, in two sets that swap after every optimizer step, and the buffers,
in two sets that swap after every training step (an OrtValue is never bound as both input
and output of one run). The training and eval graphs see each parameter and gradient as a
slice of a flat buffer, bound by address. Bindings are made once per combination of sets;
a step binds only the batch and the dropout windows' places in their tables, and only the
loss comes back to the host.

On the CPU the optimizer graph runs chunk by chunk over the flat buffers (CHUNK elements at a
time), so its dozen elementwise passes find each chunk's intermediates in cache: 1.6x faster
over 22.6M parameters than whole-buffer passes (2 threads, tools/bench_optimizer.py). On CUDA, and when the step clips
the global gradient norm (which needs every gradient at once), it runs once over the whole.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from onnxkit.autodiff import gradient_name
from onnxkit.dims import read_dim
from onnxkit.errors import OnnxkitError
from onnxkit.runtime.session import check_started, create_session, ort, parse_device, providers_for, session_options
from onnxkit.train.backend import TrainingSession, step_failure
from onnxkit.train.backends.onnx.artifacts import (
    ACCUMULATED,
    EVAL,
    INITIAL,
    OPTIMIZER,
    PATTERN_UP_TO,
    TRAINING,
    read_signature,
)
from onnxkit.train.backends.onnx.checkpoint import DROPOUT_TABLE, OPTIMIZER_KEY, STEP, load_state, save_state
from onnxkit.train.backends.onnx.dropout import STARTS, TABLE, DropoutTables
from onnxkit.train.backends.onnx.faster_of_two import FasterOfTwo
from onnxkit.train.backends.onnx.flat import PARAMS, FlatLayout
from onnxkit.train.validation_sums import LABELS, SUMS

MAX_TABLE = 1 << 28  # dropout table elements (1 GiB of float32): past that, a failed step is an error
CHUNK = 1 << 18  # optimizer elements per run on the CPU (1 MiB of float32 per tensor)
ONE_THREAD = 1 << 16  # up to this many parameters the optimizer runs on one thread (see OnnxSession)
# onnxruntime's transpose optimizers (level 1's, and level 2's per provider), off for a training graph with
# `artifacts.swapped_operands`: the MiniLM fine-tune's Transposes 36.9 -> 10.4-17.7 ms a step (72 -> 48, none left
# that a product reads; tools/bench_finetune.py --profile), its step 0.98x (0.95-0.99) in one process
TRANSPOSE_OPTIMIZERS = ("TransposeOptimizer", "TransposeOptimizer_CPUExecutionProvider",
                        "TransposeOptimizer_CUDAExecutionProvider")


def _options(threads: int | None, severity: int = 3, *, spin_between_runs: bool = True,
             optimization: str = "all", memory_pattern: bool = True) -> ort.SessionOptions:
    options = session_options(threads, optimization)
    if not spin_between_runs:  # idle threads spin within a run (fast) and stop when it returns
        options.add_session_config_entry("session.force_spinning_stop", "1")
    # ONNX Runtime's memory pattern allocates a run's intermediates as one block, planned from the first run, whose
    # own allocations stay in the arena beside it: twice the activations (MiniLM fine-tune, batch 16 x 128: a peak
    # of 1,950 MiB, 1,468 without it; steps 1.005x, in one process alternating)
    options.enable_mem_pattern = memory_pattern
    # Adam's moments of dead units decay into subnormals, which make the CPU's float ops ~3x slower
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = severity
    return options


class OnnxSession(TrainingSession):
    weighs_batches = True

    def __init__(self, directory: Path, device: str, checkpoint: Path | None, threads: int | None) -> None:
        sig = read_signature(directory)
        self._labels, self._loss = sig["labels"], sig["loss"]
        self._layout = FlatLayout.from_json(sig["layout"])
        self._buffers: dict[str, str] = sig["buffers"]
        self._slots: list[str] = sig["slots"]
        whole = sig.get("global_norm", True) or device.startswith("cuda")  # artifacts of older runs: whole
        self._chunks = chunks(self._layout.size, self._layout.size if whole else CHUNK)
        self._accumulate = sig["accumulation"] > 1
        self._dropout_settings = sig["dropout"]
        kind, self._device_id = parse_device(device)
        self._device = kind
        providers = providers_for(kind, self._device_id, tf32=False)
        # a second thread gains nothing on passes over 64K floats (0.146 vs 0.149 ms), and its idle
        # spin-wait took a core from the next training run (digits-cnn recipe: train steps -3.4%)
        few = self._layout.size <= ONE_THREAD and kind == "cpu"
        patterned = sig.get("memory_pattern", self._layout.size <= PATTERN_UP_TO)  # older artifacts: by size
        # with both sessions on every core, the idle threads of one spinning after its run took cores from the
        # other's: MiniLM's optimizer step took 57 ms where alone it takes 29, and its training run ~8% longer
        spin = few or kind != "cpu"
        one = sig.get("small_step", False) and kind == "cpu"  # a step this small runs faster on one thread
        # a too-short dropout table fails a training step that is retried: no error line for it
        options = _options(1 if one else threads, 4, spin_between_runs=spin, memory_pattern=patterned)
        lowered = sig.get("cpu_graphs", {}) if kind == "cpu" else {}  # graphs with their Convs lowered for the CPU
        training = str(directory / lowered.get(TRAINING, TRAINING))
        disabled = TRANSPOSE_OPTIMIZERS if sig.get("swapped_operands") else ()
        # a mid-size step on the CPU also gets a one-thread session, opened when first timed: the faster lately runs
        self._trains = [create_session(training, options, providers, own=True, disabled=disabled)]
        timed = sig.get("timed_threads", False) and kind == "cpu" and threads != 1
        one_thread = _options(1, 4, spin_between_runs=spin, memory_pattern=patterned)
        self._open_one_thread = functools.partial(create_session, training, one_thread, providers, own=True,
                                                  disabled=disabled)
        self._faster = FasterOfTwo() if timed else None
        self._same_bits: dict[tuple, bool] = {}  # by the batch's shapes: whether the one-thread session gives its bits
        # an update graph of elementwise nodes: the higher optimisation levels find nothing in it (every optimizer's
        # graph, clipped or not, comes out node for node the same) and only take longer to build it (~0.3 ms)
        self._optim = create_session(str(directory / OPTIMIZER), _options(1 if few else threads, spin_between_runs=spin,
                                                                          optimization="basic"), providers, own=True)
        # the eval session runs once an epoch: its intra-op threads spinning after a run took a core
        # from the training steps that follow (digits-cnn recipe: the whole fit 1.04 -> 0.80 s without);
        # not spinning at all made each of its parallel sections wake a sleeping thread (validation
        # 39 -> 34 ms a fit when they spin until the run returns)
        self._eval = create_session(str(directory / lowered.get(EVAL, EVAL)),
                                    _options(threads, spin_between_runs=False, memory_pattern=patterned), providers)
        for session in (self._trains[0], self._optim, self._eval):
            check_started(session, kind, device)
        self._load(load_state(checkpoint or directory / INITIAL), directory, checkpoint is not None)
        # host scalars, each bound as an OrtValue that shares its array's memory: written and read
        # through the arrays (0.1 us) instead of update_inplace / numpy() (0.6 / 0.3 us)
        self._host = {"lr": np.zeros((), np.float32), "step": np.zeros((), np.int64), "loss": np.zeros((), np.float32)}
        self._lr, self._step_value, self._loss_value = map(ort.OrtValue.ortvalue_from_numpy, self._host.values())
        self._batches = 0  # micro-batches since the last optimizer step
        self._current = self._buffers_current = 0  # which set of each kind is current
        self._windows: list[list] = self._dropout_settings.get("views", [])  # [input, dropout, table, dims]
        bound = {*self._layout.names, *self._buffers, STARTS, *(w[0] for w in self._windows)}
        bound |= {f"{n}.grad{ACCUMULATED}" for n in self._layout.names}
        data = [i for i in self._trains[0].get_inputs() if i.name not in bound and not i.name.startswith(TABLE)]
        self._data_inputs = [i.name for i in data]
        # where each named dim of the batch is read, to shape the bound dropout windows
        self._dims = {d: (i.name, axis) for i in data for axis, d in enumerate(i.shape) if isinstance(read_dim(d), str)}
        self._window_shapes: dict[tuple[int, ...], list[tuple]] = {}  # by the batch's named dims' sizes
        self._feeds_starts = any(i.name == STARTS for i in self._trains[0].get_inputs())
        self._eval_inputs = [i.name for i in self._eval.get_inputs()]
        self._eval_data = [n for n in self._eval_inputs if n not in {*self._layout.names, *self._buffers, LABELS}]
        self._eval_output = self._eval.get_outputs()[0].name
        self.scores_in_graph = LABELS in self._eval_inputs
        self._bindings: dict[tuple, ort.IOBinding] = {}
        self._async = None  # on CUDA: nothing of the optimizer step comes back, no need to wait for it
        if kind == "cuda":
            self._async = ort.RunOptions()
            self._async.add_run_config_entry("disable_synchronize_execution_providers", "1")
            # onnxruntime's Python layer reads this key on every run: when it is missing, the C++
            # exception it catches costs 70-130 us a run (1.32); -1 = no CUDA graph capture
            self._async.add_run_config_entry("gpu_graph_id", "-1")

    def _load(self, saved: dict[str, np.ndarray], directory: Path, from_checkpoint: bool) -> None:
        layout = self._layout
        missing = [n for n in (*layout.names, *self._buffers) if n not in saved]
        if missing:
            raise OnnxkitError(f"checkpoint lacks {', '.join(missing[:3])}; it belongs to another run or model")
        if from_checkpoint and not all(OPTIMIZER_KEY + f"{n}.{s}" in saved for n in layout.names for s in self._slots):
            saved = {**load_state(directory / INITIAL), **saved}  # no optimizer state kept: start it afresh
        flat = {PARAMS: layout.join(saved)}
        for slot in self._slots:
            flat[f"{PARAMS}.{slot}"] = layout.join({n: saved[OPTIMIZER_KEY + f"{n}.{slot}"] for n in layout.names})
        self._state = [{k: self._value(v) for k, v in flat.items()}, {k: self._empty(v) for k, v in flat.items()}]
        self._buffer_set = [{n: self._value(saved[n]) for n in self._buffers},
                            {n: self._empty(saved[n]) for n in self._buffers}]
        like = np.zeros(layout.size, np.float32)  # on the CPU, an OrtValue made from an array shares its memory
        self._grads = [self._empty(like) for _ in range(2 if self._accumulate else 1)]
        self._zeros = self._value(like) if self._accumulate else None
        self._steps = int(saved[STEP].reshape(-1)[0]) if STEP in saved else 0
        d = self._dropout_settings
        size = int(saved[DROPOUT_TABLE].reshape(-1)[0]) if DROPOUT_TABLE in saved else None
        self._dropout = DropoutTables(d["ratios"], d["seed"], d["count"], size) if d["count"] else None
        self._set_tables()

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.require(array, requirements="C"), self._device, self._device_id)

    def _empty(self, like: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(like.shape, like.dtype, self._device, self._device_id)

    def _gradient(self) -> ort.OrtValue:
        """The gradient summed over the micro-batches so far."""
        return self._grads[(self._batches - 1) % len(self._grads)]

    def _train_binding(self, session: int = 0) -> ort.IOBinding:
        source = None if not self._accumulate or self._batches == 0 else (self._batches - 1) % 2
        target = self._batches % len(self._grads)
        key = ("train", session, self._current, self._buffers_current, source, target)
        if key not in self._bindings:
            b = self._trains[session].io_binding()
            self._bind_views(b, self._state[self._current][PARAMS], "", output=False)
            self._bind_views(b, self._grads[target], ".grad", output=True)
            if self._accumulate:
                summed = self._zeros if source is None else self._grads[source]
                self._bind_views(b, summed, ".grad" + ACCUMULATED, output=False)
            now, then = self._buffer_set[self._buffers_current], self._buffer_set[1 - self._buffers_current]
            for name, produced in self._buffers.items():
                b.bind_ortvalue_input(name, now[name])
                b.bind_ortvalue_output(produced, then[name])
            b.bind_ortvalue_output(self._loss, self._loss_value)
            for k, table in enumerate(self._tables):
                b.bind_ortvalue_input(f"{TABLE}.{k}", table)
            self._bindings[key] = b
        return self._bindings[key]

    def _bind_views(self, binding: ort.IOBinding, flat: ort.OrtValue, suffix: str, *, output: bool) -> None:
        """Bind `<param><suffix>` of every parameter to its slice of the flat buffer `flat`."""
        base, bind = flat.data_ptr(), binding.bind_output if output else binding.bind_input
        for name, shape, offset in self._layout.views:
            bind(name + suffix, self._device, self._device_id, np.float32, list(shape), base + 4 * offset)

    def train_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, weight: float = 1.0) -> float:
        if weight == 1:
            return self._run_step(feeds, labels)
        before = self.flat_gradient() if self._accumulate and self._batches else 0
        loss = self._run_step(feeds, labels)
        self.set_flat_gradient((self.flat_gradient() - before) * weight + before)  # the earlier batches' unscaled
        return loss

    def _run_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        session, wanted, shapes, same = 0, 0, (), None
        if self._faster:  # the one-thread session only for batches of shapes it gives the same bits for
            shapes = tuple(np.shape(labels if n == self._labels else feeds.get(n)) for n in self._data_inputs)
            same, wanted = self._same_bits.get(shapes), self._faster.pick()
            session = wanted if same else 0
        try:
            took = self._run_on(session, feeds, labels)
        except _TablesGrew:
            return self._run_step(feeds, labels)
        if wanted and same is None:
            self._same_bits[shapes] = self._gives_the_same_bits(feeds, labels)
        elif self._faster:
            self._faster.record(session, took)
        if self._buffers:
            self._buffers_current = 1 - self._buffers_current
        self._batches += 1
        return float(self._host["loss"])

    def _run_on(self, session: int, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        """Run the training graph on session `session` (of `_trains`) over the batch; the seconds the run took. Raises
        _TablesGrew when the dropout tables had to grow first (the step is then taken again)."""
        if session == len(self._trains):
            self._trains.append(self._open_one_thread())
        binding = self._train_binding(session)
        for name in self._data_inputs:
            if name == self._labels:
                binding.bind_cpu_input(name, labels)
            elif name in feeds:
                binding.bind_cpu_input(name, feeds[name])
            else:
                raise OnnxkitError(f"the batch has no input {name!r}; the model takes {', '.join(self._data_inputs)}")
        if self._dropout:
            starts = self._dropout.starts(self._steps, self._batches)
            if self._feeds_starts:
                binding.bind_cpu_input(STARTS, starts)
            unfit = self._bind_windows(binding, starts, feeds, labels) if self._windows else 0
            if unfit:
                self._grow_dropout(unfit)
                raise _TablesGrew
        try:
            began = time.perf_counter()
            self._trains[session].run_with_iobinding(binding)
            return time.perf_counter() - began
        except Exception as e:  # noqa: BLE001 - onnxruntime's own types
            if not self._dropout or "onnxkit.dropout" not in str(e) or self._dropout.size >= MAX_TABLE:
                raise step_failure("training step", e) from e
            self._grow_dropout()  # a sliced window ran past its table
            raise _TablesGrew from None

    def _gives_the_same_bits(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> bool:
        """After a run on session 0 over a batch of shapes the one-thread session has not run: the same run on it,
        and whether it gave the same loss, gradients and buffers bit for bit. Where a kernel's sums split by thread
        count (digits-cnn's at batch 32: 2.4e-7 apart), batches of those shapes stay on session 0, so the weights
        never depend on which session ran. The run's inputs are left as they were: it writes the same outputs again
        (those of session 0 last)."""
        first = self._step_outputs()
        self._run_on(1, feeds, labels)
        same = all(np.array_equal(a, b) for a, b in zip(first, self._step_outputs(), strict=True))
        if not same:
            self._run_on(0, feeds, labels)
        return same

    def _step_outputs(self) -> list[np.ndarray]:
        """Copies of what a training run writes: the loss, the gradient and the buffers' next values."""
        produced = self._buffer_set[1 - self._buffers_current].values()
        gradient = self._grads[self._batches % len(self._grads)]
        return [self._host["loss"].copy(), gradient.numpy().copy(), *(v.numpy().copy() for v in produced)]

    def _bind_windows(self, binding: ort.IOBinding, starts: np.ndarray, feeds: Mapping[str, np.ndarray],
                      labels: np.ndarray) -> int:
        """Bind each bound dropout window to its place in its table, shaped like this batch's
        tensor; 0, or the largest window's size when one would run past the table's end."""
        sizes = tuple(np.shape(labels if source == self._labels else feeds[source])[axis]
                      for source, axis in self._dims.values())
        windows = self._window_shapes.get(sizes)
        if windows is None:
            named = dict(zip(self._dims, sizes, strict=True))
            shapes = [[named.get(d, d) for d in dims] for _, _, _, dims in self._windows]
            windows = [(name, k, table, shape, math.prod(shape))
                       for (name, k, table, _), shape in zip(self._windows, shapes, strict=True)]
            self._window_shapes[sizes] = windows
        for name, k, table, shape, count in windows:
            start = int(starts[k])
            if start + count > self._dropout.size:
                return max(w[4] for w in windows)
            if self._device == "cpu":  # a view of the table's array (whose memory its OrtValue shares): 1.0 us
                binding.bind_cpu_input(name, self._dropout.tables[table][start:start + count].reshape(shape))
            else:  # by address: 5-6 us in onnxruntime 1.32 (its OrtDevice.make per call)
                where = self._table_at[table] + 4 * start
                binding.bind_input(name, self._device, self._device_id, np.float32, shape, where)
        return 0

    def _grow_dropout(self, window: int = 0) -> None:
        """Draw longer tables, long enough for a window of `window` elements (0: unknown, a sliced
        window: four times longer); the step is then taken again."""
        if self._dropout.size >= MAX_TABLE or 2 * window > MAX_TABLE:
            raise OnnxkitError(f"a dropout input is too large for a {MAX_TABLE}-element mask table")
        self._dropout.grow(window)
        self._set_tables()
        self._bindings.clear()

    def _set_tables(self) -> None:
        self._tables = [self._value(t) for t in self._dropout.tables] if self._dropout else []
        self._table_at = [t.data_ptr() for t in self._tables]  # where each table starts

    def optimizer_step(self, lr: float) -> None:
        if self._batches == 0:
            raise OnnxkitError("optimizer_step before any train_step: there are no gradients to apply")
        self._steps += 1
        self._host["lr"][...] = lr
        self._host["step"][...] = self._steps
        key = ("optim", self._current, (self._batches - 1) % len(self._grads))
        if key not in self._bindings:
            self._bindings[key] = [self._optimizer_binding(offset, size) for offset, size in self._chunks]
        try:
            for binding in self._bindings[key]:
                self._optim.run_with_iobinding(binding, self._async)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own types
            raise step_failure("optimizer step", e) from e
        self._current = 1 - self._current
        self._batches = 0

    def _optimizer_binding(self, offset: int, size: int) -> ort.IOBinding:
        """The optimizer graph bound to elements [offset, offset + size) of the current state and
        gradient, writing the other state set."""
        b = self._optim.io_binding()
        b.bind_ortvalue_input("lr", self._lr)
        b.bind_ortvalue_input("step", self._step_value)
        now, then = self._state[self._current], self._state[1 - self._current]
        views = [(gradient_name(PARAMS), self._gradient(), b.bind_input)]
        views += [(name, now[name], b.bind_input) for name in now]
        views += [(f"{name}.updated", then[name], b.bind_output) for name in now]
        for name, flat, bind in views:
            bind(name, self._device, self._device_id, np.float32, [size], flat.data_ptr() + 4 * offset)
        return b

    def _eval_binding(self, kind: str) -> ort.IOBinding:
        """The eval graph bound to the current parameters and buffers, one binding per `kind` of run."""
        key = (kind, self._current, self._buffers_current)
        if key not in self._bindings:
            b = self._eval.io_binding()
            self._bind_views(b, self._state[self._current][PARAMS], "", output=False)
            buffers = self._buffer_set[self._buffers_current]
            for name in self._eval_inputs:
                if name in buffers:
                    b.bind_ortvalue_input(name, buffers[name])
            self._bindings[key] = b
        return self._bindings[key]

    def _run_eval(self, b: ort.IOBinding, feeds: Mapping[str, np.ndarray]) -> None:
        for name in self._eval_data:
            b.bind_cpu_input(name, feeds[name])
        try:
            self._eval.run_with_iobinding(b)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own types
            raise step_failure("evaluation", e) from e

    def eval_step(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        b = self._eval_binding("eval")
        if self.scores_in_graph:  # class ids the sums are not read for
            b.bind_cpu_input(LABELS, np.zeros(len(next(iter(feeds.values()))), np.int64))
        b.bind_output(self._eval_output, "cpu")  # afresh: the last batch may be shorter
        self._run_eval(b, feeds)
        return b.get_outputs()[0].numpy()

    def score_step(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray, out: np.ndarray) -> None:
        b = self._eval_binding("score")
        b.bind_cpu_input(LABELS, labels)
        b.bind_output(SUMS, "cpu", 0, np.float64, list(out.shape), out.ctypes.data)
        self._run_eval(b, feeds)

    def parameters(self) -> dict[str, np.ndarray]:
        values = self._layout.split(self._state[self._current][PARAMS].numpy().copy())
        values.update({n: v.numpy().copy() for n, v in self._buffer_set[self._buffers_current].items()})
        return values

    def flat_gradient(self) -> np.ndarray:
        """The accumulated gradient of all parameters as one flat float32 vector (a copy)."""
        if self._batches == 0:
            raise OnnxkitError("no gradients yet: run train_step first")
        return self._gradient().numpy().copy()

    def set_flat_gradient(self, gradient: np.ndarray) -> None:
        """Replace the accumulated gradient (e.g. by its mean over data-parallel workers)."""
        if self._batches == 0:
            raise OnnxkitError("no gradients yet: run train_step first")
        self._gradient().update_inplace(np.ascontiguousarray(gradient, dtype=np.float32).reshape(-1))

    def gradients(self) -> dict[str, np.ndarray]:
        return self._layout.split(self.flat_gradient())

    def set_gradients(self, gradients: Mapping[str, np.ndarray]) -> None:
        self.set_flat_gradient(self._layout.join(gradients))

    def buffers(self) -> dict[str, np.ndarray]:
        return {n: v.numpy().copy() for n, v in self._buffer_set[self._buffers_current].items()}

    def set_buffers(self, values: Mapping[str, np.ndarray]) -> None:
        current = self._buffer_set[self._buffers_current]
        for name, value in values.items():
            current[name].update_inplace(np.require(value, current[name].numpy().dtype, "C"))

    def set_dropout_stream(self, stream: int) -> None:
        """Draw dropout windows from stream `stream` (data-parallel rank; 0 is a lone process's)."""
        if self._dropout:
            self._dropout.stream = stream

    @property
    def steps(self) -> int:
        return self._steps

    def save_checkpoint(self, path: Path, *, optimizer_state: bool = True) -> None:
        state = self.parameters()
        if optimizer_state:
            current = self._state[self._current]
            for slot in self._slots:
                values = self._layout.split(current[f"{PARAMS}.{slot}"].numpy(), f".{slot}")
                state.update({OPTIMIZER_KEY + k: v for k, v in values.items()})
            state[STEP] = np.asarray(self._steps, np.int64)
            if self._dropout:
                state[DROPOUT_TABLE] = np.asarray(self._dropout.size, np.int64)
        save_state(path, state)


class _TablesGrew(Exception):
    """The dropout tables grew to fit this batch's windows: the step's bindings changed, take it again."""


def chunks(total: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, size) of consecutive pieces of at most `chunk` elements covering `total`."""
    return [(offset, min(chunk, total - offset)) for offset in range(0, total, max(chunk, 1))]
