"""Regenerate the README's tables that come from the code: the ops with gradient rules
(`onnxkit.autodiff.gradient_table`) and the optimizers (`onnxkit.train.optim.optimizer_table`).

    python tools/readme_tables.py          # rewrite README.md in place
    python tools/readme_tables.py --check  # exit 1 when README.md is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def tables() -> dict[str, str]:
    from onnxkit.autodiff import gradient_table
    from onnxkit.train.optim import optimizer_table

    return {"gradients": gradient_table(), "optimizers": optimizer_table()}


def render(text: str) -> str:
    """`text` with each `<!-- table:NAME -->...<!-- /table:NAME -->` block regenerated."""
    for name, table in tables().items():
        pattern = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- table:{name} --> block")
        text = pattern.sub(lambda m, t=table: m.group(1) + t + "\n" + m.group(2), text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args()
    current = README.read_text()
    fresh = render(current)
    if args.check:
        sys.exit(0 if fresh == current else "README.md tables are out of date: run python tools/readme_tables.py")
    README.write_text(fresh)


if __name__ == "__main__":
    main()
