"""The built wheel works on its own: it carries the zoo, lists all eight models, builds one, and
requires the whole stack its commands use (no extras), so a plain install trains.

The wheel is built from a copy of the sources (no stale build/ folder), installed with
--no-deps into a fresh venv that sees .venv's site-packages for the dependencies (offline),
and run from a folder outside the repository, so nothing is imported from the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["bert-classifier", "binary-classifier", "digits-cnn", "digits-mlp", "image-cnn", "iris-mlp", "tabular-mlp",
       "text-transformer"]

pytestmark = pytest.mark.slow


def run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_carries_the_zoo(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("onnxkit", "models"):
        shutil.copytree(ROOT / folder, src / folder, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
        cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("onnxkit-*.whl")

    env = tmp_path / "env"
    run(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp_path)
    python = env / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # .venv's, without its .pth files
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel,
        cwd=tmp_path)

    where = run(python, "-c", "import onnxkit.zoo as z; print(z.ZOO_DIR)", cwd=tmp_path).strip()
    assert Path(where).is_relative_to(site), where  # the installed package, not the checkout
    listed = run(env / "bin" / "onnxkit", "models", cwd=tmp_path)
    assert [line.split()[0] for line in listed.splitlines() if not line.startswith(" ")] == ZOO
    out = tmp_path / "cnn.onnx"
    run(env / "bin" / "onnxkit", "build", "digits-cnn", "-o", out, cwd=tmp_path)
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["image"]
    onnx.checker.check_model(model)

    # the commands' stack comes with the package itself, not with extras: a plain install trains
    with zipfile.ZipFile(wheel) as archive:
        # the gRPC service definition the README points V2 clients in other languages to (it was left out)
        assert "onnxkit/serve/v2_grpc.proto" in archive.namelist()
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        required = [line.split(":", 1)[1].strip() for line in archive.read(meta).decode().splitlines()
                    if line.startswith("Requires-Dist:") and "extra ==" not in line]
    names = {re.match(r"[A-Za-z0-9._-]+", r).group().lower() for r in required}
    assert {"onnxruntime", "scikit-learn", "pillow", "tokenizers", "uvicorn", "grpcio", "netron"} <= names, names
    run(env / "bin" / "onnxkit", "build", "iris-mlp", "-o", tmp_path / "iris.onnx", cwd=tmp_path)
    trained = run(env / "bin" / "onnxkit", "train", tmp_path / "iris.onnx", "--data", "iris", "--epochs", "3",
                  "-o", tmp_path / "run", cwd=tmp_path)
    assert "wrote" in trained and (tmp_path / "run" / "model.onnx").is_file()
