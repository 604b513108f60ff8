"""`Module`, `Parameter` and `Buffer`: a tree of layers whose attribute names become
the hierarchical names of the ONNX initializers (`encoder.layers.0.attn.q.weight`).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from onnxkit.errors import OnnxkitError, suggest
from onnxkit.files import npz_arrays
from onnxkit.nn.graph import current_graph


class ArgumentTypeError(OnnxkitError, TypeError):
    """A layer argument of the wrong type (`Linear(4.0, 3)`): a TypeError, as Python's own are, and an
    OnnxkitError, so the CLI prints it on one line."""


def _layer(layer: object) -> str:
    return layer if isinstance(layer, str) else type(layer).__name__


def _shown(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def check_int(layer: object, name: str, value: Any, minimum: int | None = 1) -> int:
    """A layer's size argument as an int (numpy ints too) of at least `minimum` (None: any integer),
    or one error that names the layer and the argument: "Linear: in_features must be a positive
    integer, got 0" (OnnxkitError; ArgumentTypeError for a float, a string or a bool)."""
    what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}")
    if not _is_int(value) or (minimum is not None and value < minimum):
        error = OnnxkitError if _is_int(value) else ArgumentTypeError
        raise error(f"{_layer(layer)}: {name} must be {what}, got {_shown(value)}")
    return int(value)


def check_ints(layer: object, name: str, value: Any, n: int = 2, minimum: int = 1) -> tuple[int, ...]:
    """An int or `n` of them (a tuple or a list), each checked as `check_int` does: a kernel size,
    a stride, a padding."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer"
    many = {1: " (or a tuple of one)", 2: " or a pair of them"}.get(n, f" or {n} of them")
    message = f"{_layer(layer)}: {name} must be {what}{many}, got {_shown(value)}"
    if _is_int(value):
        values = (value,) * n
    elif isinstance(value, tuple | list) and all(_is_int(v) for v in value):
        values = tuple(value)
    else:
        raise ArgumentTypeError(message)
    if len(values) != n or any(v < minimum for v in values):
        raise OnnxkitError(message)
    return tuple(int(v) for v in values)


def check_number(layer: object, name: str, value: Any, low: float | None = None, high: float | None = None,
                 high_open: bool = False) -> Any:
    """A real number (not a bool) in [low, high] (or [low, high) with `high_open`); returned as given."""
    if not _is_real(value):
        raise ArgumentTypeError(f"{_layer(layer)}: {name} must be a number, got {_shown(value)}")
    too_high = high is not None and (value >= high if high_open else value > high)
    if (low is not None and value < low) or too_high or value != value:  # NaN too
        bounds = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}"
        raise OnnxkitError(f"{_layer(layer)}: {name} must be {'in ' if high is not None else ''}{bounds}, "
                           f"got {_shown(value)}")
    return value


def check_probability(layer: object, name: str, value: Any) -> Any:
    """A dropout probability: a number in [0, 1)."""
    return check_number(layer, name, value, 0, 1, high_open=True)


class Parameter:
    """A trainable array. Its name is its attribute path in the module tree."""

    trainable = True

    def __init__(self, value: np.ndarray):
        self.value = np.require(value, requirements="C")  # a scalar stays 0-d
        self.name = ""

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    def numel(self) -> int:
        """Its number of values, as PyTorch's `p.numel()`."""
        return int(self.value.size)

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        """Its shape, or one dim, as PyTorch's `p.size()`, in forward or outside it."""
        return self.shape if dim is None else self.shape[dim]

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}({self.name or '?'}, {self.value.dtype.name}{list(self.value.shape)})"


class Buffer(Parameter):
    """A non-trainable array stored in the model, such as batch-norm running statistics."""

    trainable = False


# Other libraries' names for the layers' keywords (Keras, ONNX, numpy), which take PyTorch's: nn.Softmax(axis=1)
_FOREIGN_KEYWORDS = {
    "axis": ("dim", "start_dim"),
    "rate": ("p",),
    "epsilon": ("eps", "layer_norm_eps"),
    "use_bias": ("bias",),
    "alpha": ("negative_slope",),
    "strides": ("stride",),
    "pool_size": ("kernel_size",),
    "units": ("out_features",),
    "filters": ("out_channels",),
    "embed_dim": ("dim",),
    "num_heads": ("nhead",),
    "input_dim": ("num_embeddings", "in_features"),
    "output_dim": ("embedding_dim", "out_features"),
}
_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(\w+)'")


def _what_it_takes(cls: type, signature: inspect.Signature, error: TypeError, kwargs: dict[str, Any]) -> str:
    """What to append to Python's own binding error for layer `cls`: for an unknown keyword, the layer's
    keyword meant (PyTorch's name for another library's, or a close spelling); then what the layer takes."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in list(signature.parameters.values())[1:]]
    takes = f" {cls.__name__} takes {inspect.Signature(params)}"
    unexpected = _UNEXPECTED.search(str(error))
    if not unexpected:
        return f";{takes}"
    keyword, names = unexpected[1], [p.name for p in params]
    ours = next((k for k in _FOREIGN_KEYWORDS.get(keyword, ()) if k in names), None)
    if ours:
        written = f"{cls.__name__}({ours}={kwargs[keyword]!r})"
        return f". Did you mean: {ours}? (PyTorch's name for {keyword}: {written}){takes}"
    return f".{suggest(keyword, names)}{takes}"


class Module:
    """Base class of layers. Subclasses set children and parameters in `__init__`
    and describe the computation in `forward`, using `onnxkit.nn` ops.
    """

    # build() writes the inference form, which training turns into the training form: forward always traces eval
    # mode, so PyTorch's `if self.training:` branches stay out of the model, as in a PyTorch export
    training = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A layer of no options shows as taking none (`Tanh()`) in help() and signature hints: it showed as
        `Tanh(*args, **kwargs) -> Module`, `__new__`'s signature, while any argument is refused."""
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.Signature() if cls.__init__ is object.__init__ else None  # None: __init__'s

    def __new__(cls, *args: Any, **kwargs: Any) -> Module:
        """Remember where the layer was made, `(file, line)`, so errors can point at that code. A layer of no
        options given one is a TypeError (with `__new__` overridden, Python skips its own check: nn.Tanh(3) and
        nn.GELU(approximate='tanh') were taken and the argument dropped)."""
        if (args or kwargs) and cls.__init__ is object.__init__:
            given = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
            raise TypeError(f"{cls.__name__}() takes no arguments, got {given}")
        if args or kwargs:  # the layer's own name in the error, not a private base's (_Pool2d.__init__())
            signature = inspect.signature(cls.__init__)
            try:
                signature.bind(None, *args, **kwargs)
            except TypeError as e:
                raise TypeError(f"{cls.__name__}() {e}{_what_it_takes(cls, signature, e, kwargs)}") from None
        module = super().__new__(cls)
        caller = sys._getframe(1)
        module._created_at = (caller.f_code.co_filename, caller.f_lineno)
        return module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        graph = current_graph()
        kind = type(self).__name__
        path = getattr(self, "_path", None)
        if path is None:  # a module made inside forward: scope it under its caller
            path = f"{graph.scope}.{kind}".lstrip(".")
        if any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values())):  # a constant: named if the input idles
            caller = sys._getframe(1)
            graph.numpy_calls.append((f"{path or 'model'} ({kind})", caller.f_code.co_filename, caller.f_lineno))
        with graph.scoped(path, f"{kind}({self.extra_repr()})", kind):
            return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """A misspelt forward (`forwrd`, `foward`) is named: the message said only that forward was missing."""
        own = [n for n in vars(type(self)) if callable(getattr(type(self), n)) and not n.startswith("__")]
        close = difflib.get_close_matches("forward", own, n=1, cutoff=0.6)
        hint = f" (it has {close[0]}(): rename it forward)" if close else ""
        raise NotImplementedError(f"{type(self).__name__} must define forward(){hint}")

    def eval(self) -> Module:
        """PyTorch's `model.eval()`: the mode every build traces already; returns the module (it was an
        AttributeError before a comparison with PyTorch's outputs)."""
        return self

    def train(self, mode: bool = True) -> Module:
        """`train(False)` is `eval()`; `train()` is refused saying how training works here: build() writes the
        inference form and `onnxkit train` derives dropout's and batch norm's training forms from it."""
        if mode:
            raise OnnxkitError(f"{type(self).__name__}.train(): nn.build writes the inference form (dropout off, batch "
                               "norm on its running statistics) and `onnxkit train` / onnxkit.train.fit derive the "
                               "training form from it; build the model and train that")
        return self

    # -- the tree ---------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_arrays(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every Parameter and Buffer, depth first, each once, by hierarchical name."""
        seen: set[int] = set()
        for path, module in self.named_modules(prefix):
            for name, value in vars(module).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    yield (f"{path}.{name}" if path else name), value

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """Trainable parameters only."""
        return ((n, p) for n, p in self.named_arrays() if p.trainable)

    def named_buffers(self) -> Iterator[tuple[str, Parameter]]:
        return ((n, p) for n, p in self.named_arrays() if not p.trainable)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """PyTorch's: `self.register_buffer("pe", table)` keeps a non-trainable array, a Buffer in the model and the
        state dict; `persistent=False` (not in PyTorch's state dict) makes it a constant of the graph, so a PyTorch
        state dict still loads strictly. It was an AttributeError (a positional encoding's usual home)."""
        value = None if tensor is None else np.asarray(tensor)
        setattr(self, name, Buffer(value) if persistent and value is not None else value)

    # PyTorch's iterators over the tree (`for m in self.modules()`, `sum(p.numel() for p in model.parameters())`)
    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def buffers(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_buffers())

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def num_parameters(self) -> int:
        return int(sum(p.value.size for _, p in self.named_parameters()))

    def assign_names(self) -> None:
        """Name every submodule and array by its path; called by `build()`."""
        for path, module in self.named_modules():
            module._path = path
        for name, p in self.named_arrays():
            p.name = name

    # -- weights ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: p.value for name, p in self.named_arrays()}

    def pytorch_state(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This layer's own entries of a state dict (names without the layer's path) in the DSL's form: a layer
        whose PyTorch counterpart keeps its weights otherwise (BatchNorm's `num_batches_tracked`, an LSTM's gate
        order) converts them here; others take them as they are."""
        return state

    def _adopt_pytorch(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A state dict with the entries under each layer (names relative to it) passed through its
        `pytorch_state`, outer layers first: one may rename entries of layers inside it."""
        for path, module in self.named_modules():
            if type(module).pytorch_state is Module.pytorch_state:
                continue
            prefix = f"{path}." if path else ""
            own = {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}
            if own:
                rest = {name: value for name, value in state.items() if not name.startswith(prefix)}
                try:
                    adopted = module.pytorch_state(own)
                except OnnxkitError as e:  # its names are relative to it
                    raise OnnxkitError(f"{path}: {e}" if path else str(e)) from None
                state = {**rest, **{prefix + name: value for name, value in adopted.items()}}
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays in by name; shapes must match, and with `strict` every name too. All are checked
        before any is copied: a refused state dict leaves the module as it was. A PyTorch state dict's extras
        and layouts are taken by each layer's `pytorch_state`."""
        state = self._adopt_pytorch(state)
        arrays = dict(self.named_arrays())
        accepted = {}
        for name, value in state.items():
            if name not in arrays:
                if strict:
                    raise OnnxkitError(f"unknown weight {name!r}.{suggest(name, arrays)}")
                continue
            value = np.asarray(value)
            if value.shape != arrays[name].value.shape:
                expected = arrays[name].value.shape
                flipped = value.ndim == 2 and value.shape[::-1] == expected  # PyTorch's Linear keeps [out, in]
                hint = ("it is the transpose: a PyTorch Linear's weight is [out, in] where the DSL's Linear keeps "
                        "[in, out]; pass its .T" if flipped else "check that the checkpoint matches the model options")
                raise OnnxkitError(f"weight {name!r} has shape {list(value.shape)}, the model expects "
                                   f"{list(expected)}; {hint}")
            accepted[name] = value
        missing = [n for n in arrays if n not in state]
        if strict and missing:
            raise OnnxkitError(
                f"{len(missing)} weights missing from the state dict, e.g. {missing[0]!r}; "
                "pass strict=False to keep their initial values"
            )
        for name, value in accepted.items():
            arrays[name].value = np.require(value, arrays[name].value.dtype, "C")

    def save(self, path: str | os.PathLike) -> None:
        """Write the weights as a .safetensors (or .npz) file, atomically; another suffix is refused."""
        from onnxkit.files import atomic_path, write_safetensors

        path = os.fspath(path)
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in (".safetensors", ".npz"):  # w.pt held safetensors, which torch.load cannot read
            raise OnnxkitError(f"{path}: save writes .safetensors or .npz files; name it "
                               f"{os.path.splitext(path)[0]}.safetensors (PyTorch reads it with "
                               "safetensors.torch.load_file)")
        if suffix == ".safetensors":
            write_safetensors(path, self.state_dict())
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **self.state_dict())

    def load(self, path: str | os.PathLike, strict: bool = True) -> None:
        """Read weights written by `save` (or any .safetensors / .npz with matching names)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise OnnxkitError(f"{path}: no such weights file")
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            if path.endswith(".npz"):
                state = npz_arrays(path)
            else:
                state = load_file(path)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, SafetensorError) as e:
            raise OnnxkitError(f"{path}: not a readable weights file ({e}); write it with Module.save") from e
        self.load_state_dict(state, strict=strict)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(children) + "\n)" if children else ")")


class ModuleList(Module):
    """An indexable list of modules, named `0`, `1`, ...; `append` and `extend` add to it, as PyTorch's."""

    def __init__(self, modules: Iterable[Module] = ()):
        self.extend(modules)

    def _add(self, name: str, m: Any, what: str) -> None:
        if not isinstance(m, Module):  # was left out of the model silently (a list's other attribute)
            hint = " (a layer class: instantiate it, e.g. nn.ReLU())" if isinstance(m, type) else ""
            raise OnnxkitError(f"{type(self).__name__}: {what} is {m!r}, not a Module{hint}")
        setattr(self, name, m)

    def append(self, module: Module) -> ModuleList:
        """Add `module` at the end (PyTorch's `layers.append(...)`: an AttributeError before)."""
        n = len(self)
        self._add(str(n), module, f"item {n}")
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for m in modules:
            self.append(m)
        return self

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __iter__(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def __getitem__(self, i: int | slice) -> Module:
        """One module, or for a slice (`model[:-1]`, a feature extractor) a container of those same modules, as
        PyTorch's: a ModuleList numbered afresh, a Sequential keeping their names. A slice was "'<=' not supported
        between instances of 'int' and 'slice'"."""
        if isinstance(i, slice):
            part = type(self).__new__(type(self))
            caller = sys._getframe(1)
            part._created_at = (caller.f_code.co_filename, caller.f_lineno)  # errors point at the slicing line
            for name, m in list(self.named_children())[i]:
                part._add(name if isinstance(self, Sequential) else str(len(part)), m, f"item {name!r}")
            return part
        layers = list(self)
        if not -len(layers) <= i < len(layers):
            raise IndexError(f"index {i} out of range for {len(layers)} modules")
        return layers[i]


class ModuleDict(Module):
    """Modules by name, as PyTorch's (it was missing): `heads["cls"]`, `heads["new"] = layer`, `in`, `len`, `keys()`,
    `values()`, `items()`, `update()`, iteration over the names; the names name the weights (`heads.cls.weight`)."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None):
        if modules is not None:
            self.update(modules)

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        for name, m in (modules.items() if isinstance(modules, Mapping) else modules):
            self[name] = m

    def __setitem__(self, name: str, module: Module) -> None:
        if not isinstance(name, str) or not name or "." in name or hasattr(type(self), name):
            raise OnnxkitError(f"ModuleDict: key {name!r} must be a string without '.', and not one of ModuleDict's "
                               "own attributes")
        if not isinstance(module, Module):
            raise OnnxkitError(f"ModuleDict: item {name!r} is {module!r}, not a Module")
        setattr(self, name, module)

    def __getitem__(self, name: str) -> Module:
        children = dict(self.named_children())
        if name not in children:
            raise KeyError(f"{name!r}: the ModuleDict holds {list(children)}")
        return children[name]

    def __contains__(self, name: object) -> bool:
        return name in dict(self.named_children())

    def __len__(self) -> int:
        return len(dict(self.named_children()))

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self.named_children()))

    def keys(self) -> Iterable[str]:
        return dict(self.named_children()).keys()

    def values(self) -> Iterable[Module]:
        return dict(self.named_children()).values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return dict(self.named_children()).items()


class Sequential(ModuleList):
    """Apply modules one after another: `Sequential(a, b, c)`, as PyTorch writes it, or `Sequential([a, b, c])`, or
    `Sequential(OrderedDict(conv=..., act=...))`, whose keys name the children (`conv.weight`), as in PyTorch (it
    was refused: "item 0 is 'conv', not a Module")."""

    def __init__(self, *modules: Module | Iterable[Module] | Mapping[str, Module]) -> None:
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, m in modules[0].items():
                if not isinstance(name, str) or not name.isidentifier() or hasattr(self, name):
                    raise OnnxkitError(f"Sequential: child name {name!r} must be a Python name, and not one of "
                                       "Sequential's own attributes")
                self._add(name, m, f"item {name!r}")
            return
        if len(modules) == 1 and not isinstance(modules[0], Module):
            modules = tuple(modules[0])
        super().__init__(modules)  # type: ignore[arg-type]

    def forward(self, x: Any) -> Any:
        for m in self:
            x = m(x)
        return x
