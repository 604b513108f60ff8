"""The onnx backend's artifacts: the training graph (objective + gradients), the optimizer
graph, the eval graph and the initial state, all in one folder.

- `training.onnx`: inputs: the batch, the labels, each parameter, the buffers and the
  dropout tables and windows (see `dropout`); outputs: the loss, each buffer's update
  and each parameter's gradient. With gradient accumulation it also takes each gradient's
  running sum (`<param>.grad.accumulated`) and adds to it. `training-cpu.onnx` and `eval-cpu.onnx`,
  where they have forward Convs to lower (`conv_lowering`): the same graphs, as the CPU runs them best.
- `optimizer.onnx`: `onnxkit.train.optim.update_model` over one flat parameter of any length;
  the session runs it over the flat buffer whole or chunk by chunk (see `session`).
- `eval.onnx`: the inference form computing the chosen output, fed the parameters and buffers; for a
  classifier (`TrainingProblem.validation_classes`) also its validation sums (`validation_sums`).

The session binds the parameters and gradients to slices of flat buffers (`flat`).
- `initial.safetensors` and `signature.json`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from onnxkit.autodiff import GRADIENT_NODES, add_gradients, gradient_name
from onnxkit.files import save_model, write_text
from onnxkit.graph_walks import initializers_to_inputs, last_two_swapped, opset, readers, transpose_perm
from onnxkit.graph_work import float_values, weighted_nodes
from onnxkit.train.backend import TrainingProblem
from onnxkit.train.backends.onnx.checkpoint import OPTIMIZER_KEY, STEP, save_state
from onnxkit.train.backends.onnx.conv_lowering import lowered_convs
from onnxkit.train.backends.onnx.dropout import replace_dropout
from onnxkit.train.backends.onnx.flat import PARAMS, FlatLayout
from onnxkit.train.optim import initial_state, update_model
from onnxkit.train.training_form import eval_form
from onnxkit.train.validation_sums import append_sums

TRAINING, OPTIMIZER, EVAL, INITIAL, SIGNATURE = (
    "training.onnx", "optimizer.onnx", "eval.onnx", "initial.safetensors", "signature.json"
)
CPU_SUFFIX = "-cpu.onnx"  # training-cpu.onnx, eval-cpu.onnx: a graph with its Convs lowered for the CPU
ACCUMULATED = ".accumulated"  # suffix of a gradient's running-sum input
# a training step of fewer forward multiply-adds than this runs on one CPU thread: a second one's handoffs cost more
# than it does there (Xeon, 2 threads, steps on one against two: digits-mlp at batch 64, 1.7M, 10% faster; digits-cnn
# at batch 32, 1.7M, 8%; at 3.3M, digits-mlp at batch 128 3% faster, digits-cnn at 64 8% slower; 6.6M, 1% slower)
ONE_THREAD_STEP = 2_500_000
# a CPU step of up to this many forward multiply-adds (and at least ONE_THREAD_STEP) also gets a one-thread training
# session, and runs on whichever of the two has been faster lately (`faster_of_two`: on a 2-vCPU VM whose host at
# times runs the vCPUs against each other, two threads took twice one's time there)
TIMED_THREADS_UP_TO = 1 << 25
# the sessions run with ONNX Runtime's memory pattern (one planned allocation a run, beside what the first run
# allocated: the activations twice) for models of at most PATTERN_UP_TO parameters whose training batch does at most
# PATTERN_MACS_UP_TO forward multiply-adds: it saves 3-4% of a 0.3-1.1M-parameter MLP's 1-3 ms step (h 1024 at batch
# 128: 140M), nothing of a MiniLM's 500 ms one, and nothing of a CIFAR CNN's 50-100 ms one, whose training memory it
# took from 1.03x PyTorch's to 1.73x (tools/train_memory.py --models resnet: 227 against 134 MiB)
PATTERN_UP_TO = 1 << 22
PATTERN_MACS_UP_TO = 1 << 28


def training_graph(problem: TrainingProblem) -> tuple[onnx.ModelProto, dict[str, np.ndarray], FlatLayout, dict]:
    """The training graph, the initial values of the parameters and buffers, the flat layout
    and the dropout settings."""
    model = onnx.ModelProto()
    model.CopyFrom(problem.objective.model)
    values = initializers_to_inputs(model, [*problem.trainable, *problem.buffers])
    dropout = replace_dropout(model)
    model.graph.output.extend(
        helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, list(values[name].shape))
        for name, out in problem.buffers.items()
    )
    graph = add_gradients(model, problem.trainable, problem.objective.total)
    keep = {problem.objective.loss, *problem.buffers.values(), *(gradient_name(p) for p in problem.trainable)}
    outputs = [o for o in graph.graph.output if o.name in keep]
    del graph.graph.output[:]
    graph.graph.output.extend(outputs)
    layout = FlatLayout.of(values, problem.trainable)
    if problem.grad_accumulation > 1:  # each gradient = this batch's + the running sum fed back in
        for p in problem.trainable:
            g = gradient_name(p)
            for node in graph.graph.node:
                node.output[:] = [f"{g}.batch" if o == g else o for o in node.output]
            graph.graph.node.append(helper.make_node("Add", [f"{g}.batch", g + ACCUMULATED], [g]))
            graph.graph.input.append(helper.make_tensor_value_info(g + ACCUMULATED, onnx.TensorProto.FLOAT,
                                                                   list(values[p].shape)))
    return graph, values, layout, dropout


def write_artifacts(problem: TrainingProblem, directory: Path) -> None:
    """Build every artifact for `problem` into `directory`."""
    graph, values, layout, dropout = training_graph(problem)
    cpu_graphs: dict[str, str] = {}
    _save_graph(graph, directory, TRAINING, cpu_graphs)
    swaps = swapped_operands(graph)
    del graph
    version = min(max(opset(problem.eval_model), 13), 21)
    optimizer = update_model(problem.optimizer, [(PARAMS, ("n",))], clip_grad_norm=problem.clip_grad_norm,
                             opset=version)
    save_model(optimizer, directory / OPTIMIZER)
    form = eval_form(problem.eval_model, problem.output, [*problem.trainable, *problem.buffers])
    if problem.validation_classes:
        append_sums(form, problem.output.name, problem.validation_classes)
    _save_graph(form, directory, EVAL, cpu_graphs)
    state = dict(values)
    for p in problem.trainable:
        state.update({OPTIMIZER_KEY + k: v for k, v in initial_state(problem.optimizer, p, values[p]).items()})
    state[STEP] = np.zeros((), np.int64)
    save_state(directory / INITIAL, state)
    macs = functools.cache(lambda: batch_macs(problem))  # shape inference, at most once
    signature = {
        "labels": problem.labels_name,
        "loss": problem.objective.loss,
        "layout": layout.to_json(),
        "buffers": problem.buffers,
        "slots": list(problem.optimizer.slots()),
        "global_norm": problem.clip_grad_norm is not None,  # the optimizer step needs every gradient at once
        "accumulation": problem.grad_accumulation,
        "dropout": dropout,
        "small_step": small_step(problem, macs),
        "timed_threads": timed_threads(problem, macs),
        "memory_pattern": memory_pattern(problem, layout.size, macs),
        "swapped_operands": swaps,
        "cpu_graphs": cpu_graphs,
    }
    write_text(directory / SIGNATURE, json.dumps(signature, indent=1))


def _save_graph(model: onnx.ModelProto, directory: Path, name: str, cpu_graphs: dict[str, str]) -> None:
    """`model` saved as `name`, and, where it has Convs to lower (`conv_lowering`), its CPU form beside it, recorded
    in `cpu_graphs` (the file the session opens on the CPU in place of `name`)."""
    save_model(model, directory / name)
    lowered = lowered_convs(model)
    if lowered is not None:
        cpu_graphs[name] = name.replace(".onnx", CPU_SUFFIX)
        save_model(lowered, directory / cpu_graphs[name])


def batch_macs(problem: TrainingProblem) -> int:
    """The forward multiply-adds of a training batch of `problem.batch_size` rows (the weighted nodes', `graph_work`;
    shape inference over the model)."""
    return sum(w.macs for w in weighted_nodes(problem.eval_model)) * (problem.batch_size or 0)


def small_step(problem: TrainingProblem, macs: Callable[[], int]) -> bool:
    """Whether a training step at `problem.batch_size` does fewer than ONE_THREAD_STEP forward multiply-adds
    (`macs()`); a batch size not given: False."""
    return _step_under(problem, macs, ONE_THREAD_STEP)


def timed_threads(problem: TrainingProblem, macs: Callable[[], int]) -> bool:
    """Whether a training step at `problem.batch_size` does from ONE_THREAD_STEP up to TIMED_THREADS_UP_TO forward
    multiply-adds: the session then times a one-thread session of it beside its own (see TIMED_THREADS_UP_TO)."""
    return _step_under(problem, macs, TIMED_THREADS_UP_TO) and not small_step(problem, macs)


def _step_under(problem: TrainingProblem, macs: Callable[[], int], limit: int) -> bool:
    """Whether a training step at `problem.batch_size` does fewer than `limit` forward multiply-adds; no batch size:
    False. Models whose weights alone are past it at that batch are taken as past it without shape inference (a
    dense or conv layer does at least its weights' multiply-adds a row; an embedding's table does none, so such
    models keep every thread)."""
    rows = problem.batch_size
    if not rows or float_values(problem.eval_model) * rows >= limit:
        return False
    return macs() < limit


def memory_pattern(problem: TrainingProblem, parameters: int, macs: Callable[[], int]) -> bool:
    """Whether the sessions run with ONNX Runtime's memory pattern (see PATTERN_UP_TO): a model of at most
    PATTERN_UP_TO parameters whose training batch does at most PATTERN_MACS_UP_TO forward multiply-adds (`macs()`;
    batch size not given: by the parameters alone)."""
    if parameters > PATTERN_UP_TO:
        return False
    return not problem.batch_size or macs() <= PATTERN_MACS_UP_TO


def swapped_operands(graph: onnx.ModelProto) -> bool:
    """Whether a MatMul of `graph` reads a last-two-axes swap of another Transpose's output (attention's K^T, and
    the operands of its gradients), and the forward part holds no transpose that moves the last axis but into
    products.
    onnxruntime's transpose optimizer would compose the two transposes into one that moves the last axis, a copy,
    before its MatMul fusion could fold the swap into the product; such a graph is opened without it
    (`session.TRANSPOSE_OPTIMIZERS`). A model's other such transposes (an exporter's NHWC <-> NCHW pairs) are left
    for the optimizer to push and cancel."""
    transposes = {n.output[0]: n for n in graph.graph.node if n.op_type == "Transpose"}
    perms = {out: transpose_perm(node) or [] for out, node in transposes.items()}  # [] reverses: moves the last axis
    read_by = readers(graph.graph.node)

    def other_copy(out: str) -> bool:  # a forward transpose moving the last axis, not into a product
        moves = not perms[out] or perms[out][-1] != len(perms[out]) - 1
        read = [r for r in read_by.get(out, []) if not r.name.startswith(GRADIENT_NODES)]
        into_products = bool(read) and all(r.op_type == "MatMul" for r in read)
        return not transposes[out].name.startswith(GRADIENT_NODES) and moves and not into_products

    if any(other_copy(out) for out in transposes):
        return False
    swaps_of_transposes = {out for out, node in transposes.items() if len(perms[out]) > 2
                           and perms[out] == last_two_swapped(len(perms[out])) and node.input[0] in transposes}
    return any(i in swaps_of_transposes for n in graph.graph.node if n.op_type == "MatMul" for i in n.input)


def read_signature(directory: Path) -> dict:
    return json.loads((directory / SIGNATURE).read_text())
