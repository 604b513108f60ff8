"""The project's dependencies from pyproject.toml as a requirements file, less some of them.

`make venv-ort` installs onnxkit without its dependencies, then these in place of onnxruntime
and onnx (the legacy training build and the onnx it loads take their place):

    python tools/requirements.py --without onnxruntime onnx --extra dev > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def name(requirement: str) -> str:
    """The distribution name a requirement string starts with, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--without", nargs="*", default=[], help="distribution names to leave out")
    parser.add_argument("--extra", nargs="*", default=[], help="optional-dependency groups to add")
    args = parser.parse_args()
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    unknown = sorted(set(args.extra) - set(project["optional-dependencies"]))
    if unknown:
        parser.error(f"no extra {', '.join(unknown)}; the extras: {', '.join(project['optional-dependencies'])}")
    wanted = list(project["dependencies"])
    for extra in args.extra:
        wanted += project["optional-dependencies"][extra]
    left_out = {name(n) for n in args.without}
    print("\n".join(r for r in wanted if name(r) not in left_out))


if __name__ == "__main__":
    main()
