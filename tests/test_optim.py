"""Optimizer update graphs (onnxkit.train.optim): 20 steps on onnxruntime against numpy implementations
of torch.optim's documented algorithms (float64), against onnx.reference's ai.onnx.preview.training ops,
and the graph contract, registry and option errors.

Tolerance: the graphs run in float32 and the references in float64 from the same float32 inputs, so
values are compared with |got - want| <= 1e-6 + 1e-5 * |want| (parameters are O(1); the relative term
covers the small second-moment states).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxkit.errors import OnnxkitError
from onnxkit.train.optim import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    AdamW,
    Expr,
    Optimizer,
    RMSprop,
    Step,
    get_optimizer,
    initial_state,
    optimizer_table,
    state_names,
    update_model,
)
from onnxkit.train.optim.spec import REGISTRY

PARAMS = [("fc.weight", (3, 4)), ("fc.bias", (4,)), ("scale", ())]
STEPS = 20
ATOL, RTOL = 1e-6, 1e-5


# numpy references, written from the algorithm boxes of torch.optim's docs; `s` is the torch-named
# per-parameter state, filled on the first step as torch does.


def ref_sgd(p, g, s, lr, t, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p
    if momentum:
        s["momentum_buffer"] = g if t == 1 else momentum * s["momentum_buffer"] + (1 - dampening) * g
        g = g + momentum * s["momentum_buffer"] if nesterov else s["momentum_buffer"]
    return p - lr * g


def ref_adam(p, g, s, lr, t, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    b1, b2 = betas
    if t == 1:
        s.update(exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        if amsgrad:
            s["max_exp_avg_sq"] = np.zeros_like(p)
    s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * g
    s["exp_avg_sq"] = b2 * s["exp_avg_sq"] + (1 - b2) * g * g
    v = s["exp_avg_sq"]
    if amsgrad:  # the max of the raw second moments, bias-corrected afterwards (torch's code)
        v = s["max_exp_avg_sq"] = np.maximum(s["max_exp_avg_sq"], v)
    m_hat = s["exp_avg"] / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_adamw(p, g, s, lr, t, **options):
    return ref_adam(p, g, s, lr, t, decoupled=True, **options)


def ref_adagrad(p, g, s, lr, t, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    if t == 1:
        s["sum"] = np.full_like(p, initial_accumulator_value)
    g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    s["sum"] = s["sum"] + g * g
    return p - clr * g / (np.sqrt(s["sum"]) + eps)


def ref_rmsprop(p, g, s, lr, t, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    if t == 1:
        s["square_avg"] = np.zeros_like(p)
        if centered:
            s["grad_avg"] = np.zeros_like(p)
        if momentum:
            s["momentum_buffer"] = np.zeros_like(p)
    g = g + weight_decay * p
    s["square_avg"] = alpha * s["square_avg"] + (1 - alpha) * g * g
    v = s["square_avg"]
    if centered:
        s["grad_avg"] = alpha * s["grad_avg"] + (1 - alpha) * g
        v = v - s["grad_avg"] ** 2
    if momentum:
        s["momentum_buffer"] = momentum * s["momentum_buffer"] + g / (np.sqrt(v) + eps)
        return p - lr * s["momentum_buffer"]
    return p - lr * g / (np.sqrt(v) + eps)


def ref_adadelta(p, g, s, lr, t, rho=0.9, eps=1e-6, weight_decay=0.0):
    if t == 1:
        s.update(square_avg=np.zeros_like(p), acc_delta=np.zeros_like(p))
    g = g + weight_decay * p
    s["square_avg"] = rho * s["square_avg"] + (1 - rho) * g * g
    delta = np.sqrt(s["acc_delta"] + eps) / np.sqrt(s["square_avg"] + eps) * g
    s["acc_delta"] = rho * s["acc_delta"] + (1 - rho) * delta * delta
    return p - lr * delta


REFERENCES = {
    "sgd": ref_sgd,
    "adam": ref_adam,
    "adamw": ref_adamw,
    "adagrad": ref_adagrad,
    "rmsprop": ref_rmsprop,
    "adadelta": ref_adadelta,
}

CASES = [
    ("sgd", {}, None),
    ("sgd", {"momentum": 0.9}, None),
    ("sgd", {"momentum": 0.9, "dampening": 0.5}, None),
    ("sgd", {"momentum": 0.8, "nesterov": True}, None),
    ("sgd", {"momentum": 0.9, "weight_decay": 0.1}, None),
    ("sgd", {"weight_decay": 0.1}, None),
    ("adam", {}, None),
    ("adam", {"amsgrad": True}, None),
    ("adam", {"weight_decay": 0.1}, None),
    ("adam", {"betas": (0.8, 0.99), "eps": 1e-4, "weight_decay": 0.05, "amsgrad": True}, None),
    ("adamw", {}, None),
    ("adamw", {"weight_decay": 0.2, "amsgrad": True}, None),
    ("adagrad", {}, None),
    ("adagrad", {"lr_decay": 0.1}, None),
    ("adagrad", {"initial_accumulator_value": 0.5, "eps": 1e-3}, None),
    ("adagrad", {"weight_decay": 0.1, "lr_decay": 0.05}, None),
    ("rmsprop", {}, None),
    ("rmsprop", {"alpha": 0.9}, None),
    ("rmsprop", {"momentum": 0.9}, None),
    ("rmsprop", {"centered": True}, None),
    ("rmsprop", {"centered": True, "momentum": 0.5, "weight_decay": 0.1, "eps": 1e-3}, None),
    ("adadelta", {}, None),
    ("adadelta", {"rho": 0.5, "eps": 1e-4}, None),
    ("adadelta", {"weight_decay": 0.1}, None),
    ("sgd", {"momentum": 0.9}, 2.0),
    ("adam", {}, 2.0),
    ("adamw", {"amsgrad": True}, 1e3),
    ("rmsprop", {"centered": True}, 0.5),
]


@dataclass
class Run:
    start: dict[str, np.ndarray]
    params: dict[str, np.ndarray]  # after the last step, from the graph
    state: dict[str, np.ndarray]
    ref_params: dict[str, np.ndarray]
    ref_state: dict[str, np.ndarray]
    clipped: int  # steps where clipping scaled the gradients


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def train(name: str, options: dict, clip: float | None) -> Run:
    """STEPS steps of the update graph and of the numpy reference on the same random gradients and lrs."""
    spec = get_optimizer(name, **options)
    rng = np.random.default_rng(0)
    params = {n: np.asarray(rng.normal(size=shape), np.float32) for n, shape in PARAMS}
    state = {k: v for n, value in params.items() for k, v in initial_state(spec, n, value).items()}
    sess = session(update_model(spec, PARAMS, clip_grad_norm=clip))
    out_names = [o.name for o in sess.get_outputs()]
    start = {n: v.astype(np.float64) for n, v in params.items()}
    ref_params = dict(start)
    ref_state: dict[str, dict] = {n: {} for n in params}
    base_lr, clipped = max(spec.default_lr, 0.05), 0
    for t in range(1, STEPS + 1):
        lr = np.array(base_lr * (1 + 0.5 * np.sin(t)), np.float32)
        scale = 10 ** rng.uniform(-1, 1)  # shrinking and growing gradients make AMSGrad's max bind
        grads = {n: np.asarray(scale * rng.normal(size=shape), np.float32) for n, shape in PARAMS}
        feeds = {"lr": lr, "step": np.array(t, np.int64), **params, **state}
        feeds |= {f"{n}.grad": g for n, g in grads.items()}
        outs = dict(zip(out_names, sess.run(None, feeds), strict=True))
        params = {n: outs[f"{n}.updated"] for n in params}
        state = {k: outs[f"{k}.updated"] for k in state}

        g64 = {n: g.astype(np.float64) for n, g in grads.items()}
        if clip is not None:
            coef = clip / (np.sqrt(sum((g * g).sum() for g in g64.values())) + 1e-6)
            clipped += bool(coef < 1)
            g64 = {n: g * min(coef, 1.0) for n, g in g64.items()}
        for n in params:
            ref_params[n] = REFERENCES[name](ref_params[n], g64[n], ref_state[n], float(lr), t, **spec.options())
    flat_ref_state = {f"{n}.{k}": v for n, s in ref_state.items() for k, v in s.items()}
    return Run(start, params, state, ref_params, flat_ref_state, clipped)


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize(("name", "options", "clip"), CASES, ids=lambda v: str(v).replace(" ", ""))
def test_twenty_steps_match_the_torch_algorithm(name, options, clip):
    run = train(name, options, clip)
    assert_close(run.params, run.ref_params)
    assert_close(run.state, run.ref_state)  # also checks the slot names are torch's
    moved = max(np.abs(run.ref_params[n] - run.start[n]).max() for n in run.start)
    assert moved > 1000 * ATOL  # the steps changed the parameters far beyond the tolerance
    if options.get("amsgrad"):
        assert any((run.state[f"{n}.max_exp_avg_sq"] > run.state[f"{n}.exp_avg_sq"]).any() for n, _ in PARAMS)
    if clip == 2.0:
        assert 0 < run.clipped < STEPS


# onnx.reference's ai.onnx.preview.training ops, where their semantics equal torch's: Momentum (T counts
# steps done, beta = 1 - dampening), Adagrad (T counts steps done) and Adam without eps (ONNX adds eps
# before the bias correction of v, torch after).
PREVIEW = [  # name, options, op, the op's T minus torch's 1-based step t
    ("sgd", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}, "Momentum", -1),
    ("sgd", {"momentum": 0.9, "nesterov": True}, "Momentum", -1),
    ("adagrad", {"lr_decay": 0.1, "weight_decay": 0.05, "eps": 1e-3, "initial_accumulator_value": 0.2}, "Adagrad", -1),
    ("adam", {"betas": (0.8, 0.95), "eps": 0.0, "weight_decay": 0.1}, "Adam", 0),
]


def preview_attrs(spec: Optimizer) -> dict:
    o = spec.options()
    if spec.name == "sgd":
        mode = "nesterov" if o["nesterov"] else "standard"
        return dict(alpha=o["momentum"], beta=1 - o["dampening"], mode=mode, norm_coefficient=o["weight_decay"])
    if spec.name == "adagrad":
        return dict(decay_factor=o["lr_decay"], epsilon=o["eps"], norm_coefficient=o["weight_decay"])
    b1, b2 = o["betas"]
    return dict(alpha=b1, beta=b2, epsilon=o["eps"], norm_coefficient=o["weight_decay"], norm_coefficient_post=0.0)


@pytest.mark.parametrize(("name", "options", "op", "t_offset"), PREVIEW, ids=lambda v: str(v)[:40])
def test_matches_onnx_preview_training_ops(name, options, op, t_offset):
    spec = get_optimizer(name, **options)
    shape, rng = (3, 4), np.random.default_rng(2)
    names = ["R", "T", "X", "G", *spec.slots()]
    node = helper.make_node(
        op, names, ["X_new", *(f"{n}_new" for n in names[4:])], domain="ai.onnx.preview.training", **preview_attrs(spec)
    )
    graph = helper.make_graph(
        [node],
        "preview",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in node.output],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.preview.training", 1)]
    preview = ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets))
    sess = session(update_model(spec, [("w", shape)]))
    x = rng.normal(size=shape).astype(np.float32)
    state = initial_state(spec, "w", x)
    ours, theirs = x, [x, *state.values()]
    for t in range(1, STEPS + 1):
        lr, g = np.array(0.05 * (1 + 0.5 * np.cos(t)), np.float32), rng.normal(size=shape).astype(np.float32)
        outs = sess.run(None, {"lr": lr, "step": np.array(t, np.int64), "w": ours, "w.grad": g, **state})
        ours, state = outs[0], dict(zip(state, outs[1:], strict=True))
        feeds = dict(zip(names, [lr, np.array(t + t_offset, np.int64), theirs[0], g, *theirs[1:]], strict=True))
        theirs = [np.asarray(v, np.float32) for v in preview.run(None, feeds)]
    np.testing.assert_allclose(ours, theirs[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(list(state.values()), theirs[1:], rtol=RTOL, atol=ATOL)


def test_graph_contract_names_types_and_opset():
    spec = get_optimizer("adam", amsgrad=True)
    model = update_model(spec, PARAMS, clip_grad_norm=1.0)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert {n.domain for n in model.graph.node} == {""}
    slots = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]

    def signature(values):
        return [
            (v.name, v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values
        ]

    f = TensorProto.FLOAT
    want_in = [("lr", f, []), ("step", TensorProto.INT64, [])]
    want_out = []
    for n, shape in PARAMS:
        want_in += [(x, f, list(shape)) for x in [n, f"{n}.grad", *(f"{n}.{s}" for s in slots)]]
        want_out += [(f"{x}.updated", f, list(shape)) for x in [n, *(f"{n}.{s}" for s in slots)]]
    assert signature(model.graph.input) == want_in
    assert signature(model.graph.output) == want_out
    assert update_model(spec, PARAMS, opset=21).opset_import[0].version == 21


def test_step_scalars_are_computed_once_for_all_parameters():
    def count(model, op):
        return sum(n.op_type == op for n in model.graph.node)

    def model(n):
        return update_model(get_optimizer("adam"), [(f"p{i}", (2, 3)) for i in range(n)], clip_grad_norm=1.0)

    one, two, ten = model(1), model(2), model(10)
    assert count(one, "Pow") == count(ten, "Pow") == 2  # 1 - beta1^t and 1 - beta2^t
    assert count(ten, "Sqrt") == 1 + 10 + 1  # the global norm, one per parameter, the bias correction's
    per_param = len(two.graph.node) - len(one.graph.node)
    assert len(ten.graph.node) - len(one.graph.node) == 9 * per_param


def test_state_names_and_initial_state():
    w = np.ones((2, 3), np.float32)
    assert state_names(get_optimizer("sgd"), "w") == []
    assert state_names(get_optimizer("sgd", momentum=0.9), "w") == ["w.momentum_buffer"]
    assert state_names(get_optimizer("rmsprop", centered=True, momentum=0.1), "w") == [
        "w.square_avg",
        "w.grad_avg",
        "w.momentum_buffer",
    ]
    assert state_names(get_optimizer("adadelta"), "fc.w") == ["fc.w.square_avg", "fc.w.acc_delta"]
    init = initial_state(get_optimizer("adagrad", initial_accumulator_value=0.25), "w", w)
    assert list(init) == ["w.sum"] and init["w.sum"].dtype == np.float32
    np.testing.assert_array_equal(init["w.sum"], np.full((2, 3), 0.25))
    assert not initial_state(get_optimizer("adamw"), "w", w)["w.exp_avg"].any()


def test_registry_names_defaults_and_default_lr_are_torchs():
    torch_defaults = {  # torch.optim's signatures, without lr and the implementation switches
        SGD: (1e-3, {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}),
        Adam: (1e-3, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}),
        AdamW: (1e-3, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False}),
        Adagrad: (1e-2, {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10}),
        RMSprop: (1e-2, {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False}),
        Adadelta: (1.0, {"rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}),
    }
    assert sorted(OPTIMIZERS) == sorted(cls.name for cls in torch_defaults)
    for cls, (lr, options) in torch_defaults.items():
        assert cls.default_lr == lr
        assert cls().options() == options
        assert get_optimizer(cls.__name__, **options) == cls()
    assert get_optimizer("SGD", momentum=1, nesterov=True).options()["momentum"] == 1.0
    assert get_optimizer("adam", betas=[0.5, 0.6]).betas == (0.5, 0.6)


def test_optimizer_table_and_describe():
    table = optimizer_table().splitlines()
    assert table[0].startswith("| optimizer |") and len(table) == 2 + len(OPTIMIZERS)
    assert "| adagrad | lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10 |" in optimizer_table()
    assert table[2 + OPTIMIZERS.index("adadelta")].endswith("| 1 |")
    assert Adam.describe().startswith("adam(betas=(0.9, 0.999), eps=1e-08, weight_decay=0, amsgrad=False): ")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("rmsprop", {"nesterov": True}, "rmsprop has no option 'nesterov'; its options: alpha, eps, weight_decay, "),
        ("adam", {"lr": 0.1}, "the learning rate is not an optimizer option"),
        ("adam", {"beta": (0.9, 0.99)}, "Did you mean: betas?"),
        ("adam", {"eps": -1e-8}, "adam option eps must be a number >= 0, got -1e-08"),
        ("adam", {"betas": (0.9, 1.0)}, "adam: betas must lie in [0, 1)"),
        ("adamw", {"betas": (0.9,)}, "adamw option betas must be 2 numbers >= 0"),
        ("adam", {"amsgrad": "yes"}, "adam option amsgrad must be true or false, got 'yes'"),
        ("adam", {"weight_decay": float("nan")}, "adam option weight_decay must be a number >= 0"),
        ("sgd", {"nesterov": True}, "sgd: nesterov needs momentum > 0 and dampening = 0"),
        ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov needs momentum > 0"),
        ("sgd", {"momentum": -0.9}, "sgd option momentum must be a number >= 0"),
        ("sgd", {"dampening": 2.0}, "sgd: dampening must lie in [0, 1]"),
        ("rmsprop", {"alpha": 1.5}, "rmsprop: alpha must lie in [0, 1]"),
        ("adadelta", {"rho": -0.1}, "adadelta option rho must be a number >= 0"),
        ("adadelta", {"rho": 1.1}, "adadelta: rho must lie in [0, 1]"),
        ("adagrad", {"lr_decay": "0.1"}, "adagrad option lr_decay must be a number >= 0"),
        ("adagrad", {"initial_accumulator_value": -1}, "initial_accumulator_value must be a number >= 0"),
        ("adamm", {}, "unknown optimizer 'adamm'; choose from "),
    ],
)
def test_bad_options_raise_onnxkit_error(name, options, message):
    with pytest.raises(OnnxkitError) as err:
        get_optimizer(name, **options)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("params", "kwargs", "message"),
    [
        ([], {}, "no parameters to optimize"),
        ([("w", (2,)), ("w", (2,))], {}, "clash with optimizer inputs: w, w.grad"),
        ([("lr", (2,))], {}, "clash with optimizer inputs: lr"),
        ([("w", (2,))], {"clip_grad_norm": 0.0}, "gradient clipping norm must be positive"),
        ([("w", (2,))], {"opset": 22}, "optimizer graphs support opset 13..21, got 22"),
    ],
)
def test_bad_graph_requests_raise_onnxkit_error(params, kwargs, message):
    with pytest.raises(OnnxkitError, match=message.replace(".", r"\.")):
        update_model(get_optimizer("sgd"), params, **kwargs)


def test_unassigned_slots_and_unchanged_values_pass_through():
    @dataclass(frozen=True, init=False)
    class Frozen(Optimizer):
        name = "frozen_for_test"
        default_lr = 0.0
        rule = "nothing changes"

        def slots(self) -> dict[str, float]:
            return {"kept": 3.0}

        def update(self, p: Expr, g: Expr, s: SimpleNamespace, step: Step) -> Expr:
            return p

    try:
        model = update_model(Frozen(), [("w", (2,))])
    finally:
        del REGISTRY["frozen_for_test"]
    onnx.checker.check_model(model, full_check=True)
    w, kept = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    feeds = {"lr": np.array(1, np.float32), "step": np.array(1, np.int64), "w": w, "w.grad": w, "w.kept": kept}
    got = session(model).run(None, feeds)
    np.testing.assert_array_equal(got[0], w)
    np.testing.assert_array_equal(got[1], kept)


def test_help_on_an_optimizer_shows_its_options_and_defaults():
    import inspect

    from onnxkit.train import optim

    for cls in (optim.SGD, optim.Adam, optim.AdamW, optim.Adagrad, optim.RMSprop, optim.Adadelta):
        # was the dataclass's 'SGD(**options: Any) -> None', twice, and no option named
        assert list(inspect.signature(cls).parameters) == list(cls.defaults())
        assert cls.__doc__.startswith(f"{cls.name}(") and "pass it to fit(optimizer=...)" in cls.__doc__
    assert str(inspect.signature(optim.SGD)) == "(*, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)"
    assert optim.SGD(momentum=0.9).momentum == 0.9


def test_an_optimizer_given_torchs_positional_arguments_says_they_go_by_keyword():
    # torch's SGD(model.parameters(), lr=0.1), or SGD(0.9), was "Optimizer.__init__() takes 1 positional argument
    # but 2 were given"
    from onnxkit.train import optim

    for make in (lambda: optim.SGD(0.9), lambda: optim.SGD([np.zeros(3)], momentum=0.9)):
        with pytest.raises(TypeError) as e:
            make()
        assert str(e.value) == ("SGD takes its options by keyword (SGD(momentum=0.0)); the parameters are the "
                                "model's, and the learning rate is fit's lr")
    with pytest.raises(TypeError, match=r"^Adam takes its options by keyword \(Adam\(betas=\(0\.9, 0\.999\)\)\)"):
        optim.Adam(None)
