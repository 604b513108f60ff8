"""Creating the onnxruntime session: provider choice, threads and graph optimisation.

`import_onnxruntime` imports onnxruntime without the training package. The
onnxruntime-training wheels probe `onnxruntime.training.ortmodule` while
`onnxruntime` itself is imported, which pulls in `onnx` and (where installed)
torch; the probe treats an ImportError as "no training package", so blocking
that one module for the duration of the import keeps the runtime light on every
build. The block is lifted afterwards, so training code in the same process
still imports normally.
"""

from __future__ import annotations

import functools
import numbers
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from onnxkit.errors import OnnxkitError
from onnxkit.files import atomic_path, foreign_file, missing_model, model_location
from onnxkit.runtime.string_locale import FALLBACK_LOCALE, missing_locale, with_fallback_locale
from onnxkit.signals import check_stop

OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
# onnxruntime-gpu installs the same module as onnxruntime: one replaces the other
GPU_INSTALL = "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]>=1.31'"


def import_onnxruntime() -> ModuleType:
    """Return the onnxruntime module, imported without `onnxruntime.training`."""
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    blocked = "onnxruntime.training" not in sys.modules
    if blocked:
        sys.modules["onnxruntime.training"] = None  # type: ignore[assignment]
    try:
        import onnxruntime
    except ImportError as e:
        check_stop()  # a Ctrl-C or SIGTERM during the import surfaces as an ImportError of the module it broke
        raise OnnxkitError(f"onnxruntime is not installed: pip install onnxruntime (for CUDA: {GPU_INSTALL})") from e
    finally:
        if blocked and sys.modules.get("onnxruntime.training", 0) is None:
            del sys.modules["onnxruntime.training"]
    return onnxruntime


ort = import_onnxruntime()


def device_spec(device: str) -> tuple[str, int]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' (any case) -> (kind, device id; 0 unless given), checking
    the form alone; anything else is an error that lists the accepted forms."""
    found = re.fullmatch(r"(auto|cpu|cuda)|(cuda):([0-9]+)", device.lower())
    if found:
        return found[1] or found[2], int(found[3] or 0)
    raise OnnxkitError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU number)")


def parse_device(device: str) -> tuple[str, int]:
    """`device_spec`, with 'auto' resolved to what exists; 'cuda' without CUDA support is an error."""
    kind, device_id = device_spec(device)
    cuda = _CUDA in ort.get_available_providers()
    if kind == "auto":
        return ("cuda" if cuda else "cpu"), 0
    if kind == "cuda" and not cuda:
        raise OnnxkitError(
            f"device {device!r}: onnxruntime {ort.__version__} here has no CUDA support; install "
            f"onnxruntime-gpu in place of onnxruntime ({GPU_INSTALL}), or use device='cpu'"
        )
    return kind, device_id


def providers_for(kind: str, device_id: int, *, tf32: bool = True) -> list:
    """The execution providers, in priority order, for a device kind. For CUDA, the CUDA and
    cuDNN libraries installed from pip are loaded first (`onnxruntime.preload_dlls`);
    `tf32=False` keeps float32 matrix products in full float32 (training wants CPU numerics)."""
    if kind == "cuda":
        _preload_cuda()
        return [(_CUDA, {"device_id": device_id, "use_tf32": int(tf32)}), _CPU]
    return [_CPU]


@functools.cache
def _preload_cuda() -> None:
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def plain_session(model: bytes, name: str | None = None) -> ort.InferenceSession:
    """A session on one CPU thread without graph optimisation: for a check run or two (does the model load, does
    it run this input), not for speed. `name`: what an error calls the model (default: 'model bytes')."""
    return create_session(model, session_options(1, "disabled"), [_CPU], name=name)


def check_started(session: ort.InferenceSession, kind: str, device: str) -> None:
    """Raise when a session asked for CUDA came up on the CPU alone (a missing CUDA library)."""
    if kind == "cuda" and session.get_providers()[0] != _CUDA:
        raise OnnxkitError(
            f"device {device!r}: onnxruntime could not start CUDA (check the CUDA and cuDNN "
            "libraries it needs) and fell back to the CPU; fix CUDA or use device='cpu'"
        )


THREADS_PER_CORE = 4  # the most intra-op threads a session takes per CPU core the process may run on


def most_threads() -> int:
    """The most intra-op threads a session is given: THREADS_PER_CORE per core this process may run on. onnxruntime
    makes as many as asked: `predict --threads 100000` took 16 GB and both cores for minutes, running no row."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return THREADS_PER_CORE * cores


def too_many_threads(threads: int) -> str | None:
    """Why `threads` intra-op threads are too many ('must be at most 8 (4 per CPU core of the 2 this process may
    use), got 9'), or None."""
    most = most_threads()
    if threads <= most:
        return None
    return f"must be at most {most} ({THREADS_PER_CORE} per CPU core of the {most // THREADS_PER_CORE} this process " \
           f"may use), got {threads}"


def check_threads(threads: int | None) -> None:
    """Refuse a thread count a session cannot take (None: onnxruntime's default, one per core)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be an integer, got {threads!r}")  # not onnxruntime's 'incompatible arguments'
    if threads < 1:
        raise OnnxkitError(f"threads must be 1 or more, got {threads}")
    if reason := too_many_threads(threads):
        raise OnnxkitError(f"threads {reason}", params=["threads"])


def session_options(threads: int | None, optimization: str, spin: bool = True) -> ort.SessionOptions:
    """SessionOptions with the intra-op threads, graph optimisation level and spin-waiting set.

    Spin-waiting threads answer fastest but keep burning CPU between runs; turn it off
    when the process shares its cores with other work (a server's event loop).
    """
    if optimization not in OPTIMIZATION_LEVELS:
        raise OnnxkitError(f"unknown optimization level {optimization!r}; use one of {', '.join(OPTIMIZATION_LEVELS)}")
    check_threads(threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # fatal only: its errors come back as exceptions, which onnxkit reports
    return options


def create_session(
    model: str | os.PathLike | bytes,
    options: ort.SessionOptions,
    providers: list,
    optimized_model_path: str | os.PathLike | None = None,
    own: bool = False,
    name: str | None = None,
    disabled: Sequence[str] = (),
) -> ort.InferenceSession:
    """An InferenceSession; its optimised graph is saved atomically when a path is given. `own`: the graph is one
    onnxkit wrote (a training graph), which onnxruntime refusing is onnxkit's bug, not the user's file (unless it
    refuses the IR version or opset, which the graph keeps from the user's). `name`: what an error calls the model
    (default: its path, or 'model bytes'). `disabled`: names of onnxruntime graph transformers not to run."""
    if optimized_model_path is None:
        return _open(model, options, providers, own, name, disabled)
    with atomic_path(optimized_model_path) as tmp:
        options.optimized_model_filepath = str(tmp)
        return _open(model, options, providers, own, name, disabled)


def _open(model: str | os.PathLike | bytes, options: ort.SessionOptions, providers: list, own: bool = False,
          name: str | None = None, disabled: Sequence[str] = ()):
    where = name or ("model bytes" if isinstance(model, bytes) else str(model))
    if not isinstance(model, bytes):
        if not os.path.isfile(model):
            raise missing_model(model)
        model = os.fspath(model_location(model))  # a link's target, where its weight files are beside that
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers,
                                    disabled_optimizers=list(disabled))
    except Exception as e:  # onnxruntime raises its own exception types, without a common base
        reason = error_reason(e)
        locale = missing_locale(reason)
        if locale is not None:
            return _in_fallback_locale(model, options, providers, where, locale, disabled)
        if not own and not isinstance(model, bytes) and (kind := foreign_file(model)):
            raise OnnxkitError(f"{where}: {kind}") from e
        refused = refusal_hint(e) if not own or _newer_than_runtime(e) else None  # an own graph keeps the opset
        hint = refused or (
            "this is a bug in onnxkit's graph for this model: please report it with the model" if own
            else "keep the weights file it was saved with beside it, complete" if "external" in reason.lower()
            else "check that the file is a complete .onnx model and that its IR version and opset suit this "
            "onnxruntime")
        raise OnnxkitError(f"{where}: onnxruntime {ort.__version__} cannot load it ({reason}); {hint}") from e


def _in_fallback_locale(model: str | bytes, options: ort.SessionOptions, providers: list, where: str,
                        locale: str, disabled: Sequence[str]) -> ort.InferenceSession:
    """A session on `model` with its StringNormalizers in C.UTF-8, for a locale this system lacks
    (`string_locale`); an error that names the locale to install if that fails too."""
    patched = with_fallback_locale(model)
    try:
        if patched is None:
            raise RuntimeError(f"locale {FALLBACK_LOCALE} is missing too")
        return ort.InferenceSession(patched, sess_options=options, providers=providers,
                                    disabled_optimizers=list(disabled))
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise OnnxkitError(f"{where}: its StringNormalizer needs locale {locale!r}, which this system lacks, and "
                           f"{FALLBACK_LOCALE} failed too ({error_reason(e)}); generate the locale (Debian, Ubuntu: "
                           f"apt-get install locales && locale-gen {locale})") from e


_FAILED_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", re.DOTALL)
_SOURCE_CHECK = re.compile(r"^/\S+:\d+ .*? was false\.\s*", re.DOTALL)  # where in the C++ a check failed
_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")  # what comes before the reason
_SOURCE_PLACE = re.compile(r"\s*\b\w+\.(?:cc|cpp|h):\d+ \w+ ")  # 'tensorprotoutils.cc:619 ValidateExternal...'
# a message's leading C++ place: 'matmul_helper.h:59 Compute ', or a path and the function's
# signature ('/onnxruntime_src/.../gather_elements.cc:150 void onnxruntime::core_impl(...) [with ...] ')
_LEADING_SOURCE = re.compile(
    r"^(?:\w+\.(?:cc|cpp|h):\d+ \w+ |/\S+:\d+ [^(]*\([^)]*\)(?: const)?(?: \[with [^\]]*\])? )"
)
# a model stamped newer than this onnxruntime reads: 'Opset 40 is under development ... Current official support
# for domain ai.onnx is till opset 28.', 'Unsupported model IR version: 99, max supported IR version: 14'
_NEWER_OPSET = re.compile(r"Opset (?P<version>\d+) is under development.*?support for domain (?P<domain>\S+) is "
                          r"till opset (?P<most>\d+)")
_NEWER_IR = re.compile(r"Unsupported model IR version: (?P<version>\d+), max supported IR version: (?P<most>\d+)")
# an op onnxruntime has no kernel or schema for: 'com.example:Foo(-1) is not a registered function/op',
# 'In Node, ("", FancyOp, "", -1) : ... No Op registered for FancyOp with domain_version of 17'
_UNKNOWN_OP = re.compile(r"(?:(?P<domain>[\w.]+):)?(?P<op>\w+)\(-?\d+\) is not a registered function/op"
                         r"|No Op registered for (?P<op2>\w+) with domain_version")
_INDEXING_OP = re.compile(r"(?:Gather|Scatter)\w*$")
_OUT_OF_RANGE = re.compile(r"out of (?:data )?bounds|out of range|invalid indice", re.IGNORECASE)
_SHAPE_FAILURE = re.compile(  # what onnxruntime says when sizes do not combine (Reshape, MatMul, Add, Concat, ...)
    r"reshape|broadcast|dimension|shape|mismatch|must match|does not match|not equal to|channels|\brank\b",
    re.IGNORECASE,
)
INDEX_HINT = "check that the values suit the model (token ids within its vocabulary, say)"
SHAPE_HINT = ("a size fixed inside the model does not fit this input's shape (an export can bake in the example's "
              "sizes: re-export with those axes dynamic, or give inputs shaped as at export)")


def failed_node(error: Exception) -> tuple[str, str, str] | None:
    """(op type, node name, what went wrong) from onnxruntime's error for a node that failed
    while running, without the C++ source location; None for other errors."""
    found = _FAILED_NODE.search(str(error))
    if found is None:
        return None
    op, name, message = found.groups()
    message = _SOURCE_CHECK.sub("", message.strip()).strip() or message.strip()
    message = _LEADING_SOURCE.sub("", message).strip() or message
    return op, name, " ".join(message.split()).rstrip(".")


def raised_by_onnxruntime(error: BaseException) -> bool:
    """Whether `error` is onnxruntime's: one of its exception types (they share no base class), or raised in its
    Python code (a quantizer's ValueError, the session's missing-input one), rather than onnxkit's own."""
    if type(error).__module__.partition(".")[0] == "onnxruntime":
        return True
    import traceback

    package = os.path.dirname(os.path.abspath(ort.__file__)) + os.sep
    return any(os.path.abspath(f.filename).startswith(package) for f in traceback.extract_tb(error.__traceback__))


def _newer_than_runtime(error: Exception) -> re.Match | None:
    """onnxruntime's refusal of a model's IR version or opset as newer than it reads, or None."""
    text = " ".join(str(error).split())
    return _NEWER_OPSET.search(text) or _NEWER_IR.search(text)


def refusal_hint(error: Exception) -> str | None:
    """What to do about a model onnxruntime refuses for what it is, not for a damaged file: an op it does not have,
    an IR version or opset newer than it reads; None for another error."""
    unknown = _UNKNOWN_OP.search(" ".join(str(error).split()))
    if unknown is not None:
        return ("replace it with standard ONNX ops (onnxkit runs those and onnxruntime's own), or export the model "
                "without it")
    found = _newer_than_runtime(error)
    if found is None:
        return None
    if found.re is _NEWER_IR:
        return (f"save it with IR version {found['most']} or lower (onnx.save after setting model.ir_version, "
                "or export it with an older onnx), or use a newer onnxruntime")
    return (f"convert it to opset {found['most']} or lower (onnx.version_converter.convert_version, or export it "
            "so), or use a newer onnxruntime")


def error_reason(error: Exception) -> str:
    """onnxruntime's error as one clause: the failing node and what went wrong, or the reason
    alone, without C++ source locations and status codes."""
    unknown = _UNKNOWN_OP.search(" ".join(str(error).split()))
    if unknown is not None:
        domain = f" of domain {unknown['domain']}" if unknown["domain"] else ""
        return f"it uses op {unknown['op'] or unknown['op2']}{domain}, which this onnxruntime does not have"
    newer = _newer_than_runtime(error)
    if newer is not None and newer.re is _NEWER_IR:
        return f"its IR version {newer['version']} is newer than the {newer['most']} this onnxruntime reads"
    if newer is not None:
        return (f"its {newer['domain']} opset {newer['version']} is newer than the {newer['most']} this "
                "onnxruntime runs")
    found = failed_node(error)
    if found is not None:
        op, name, message = found
        return f"{f'node {name!r} ({op})' if name else f'{op} node'}: {message}"
    reason = re.sub(r"^Error in execution: |^Load model from \S+ failed: ?", "",
                    _STATUS.split(" ".join(str(error).split()))[-1])  # the path: the caller's to name
    reason = _SOURCE_PLACE.sub(" ", _SOURCE_CHECK.sub("", reason) or reason).strip()
    return reason or type(error).__name__


def run_failure_hint(error: Exception, otherwise: str = "check that the input suits the model") -> str:
    """What to do about onnxruntime's `error` from running a model, as one clause: an index out of
    range in a Gather (a token id past the vocabulary) asks for other values; sizes that do not
    combine (a Reshape, MatMul or Add on a size an export fixed) for a re-export or inputs shaped as
    at export; anything else gets `otherwise`."""
    found = failed_node(error)
    op, message = (found[0], found[2]) if found is not None else ("", error_reason(error))
    if _INDEXING_OP.match(op) and _OUT_OF_RANGE.search(message):
        return INDEX_HINT
    if _SHAPE_FAILURE.search(message):
        return SHAPE_HINT
    return otherwise


def gpu_count() -> int:
    """NVIDIA GPUs the CUDA driver reports (0 without a driver)."""
    import ctypes

    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value
