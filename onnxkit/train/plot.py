"""A PNG of the training and validation curves from metrics.jsonl records."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxkit.files import atomic_path


def plot_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss per step and per epoch (train and validation); accuracy and macro-F1 when present."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    scores = [k for k in ("val_accuracy", "val_macro_f1") if any(k in r for r in epochs)]
    fig = Figure(figsize=(10 if scores else 6, 4), dpi=100)
    ax = fig.add_subplot(1, 2 if scores else 1, 1)
    ax.plot(
        [r["step"] for r in steps],
        [r["loss"] for r in steps],
        color="tab:blue",
        alpha=0.3,
        lw=0.8,
        label="train loss (step)",
    )
    ax.plot(
        [r["step"] for r in epochs],
        [r["train_loss"] for r in epochs],
        "o-",
        color="tab:blue",
        label="train loss (epoch)",
    )
    if any("val_loss" in r for r in epochs):
        ax.plot(
            [r["step"] for r in epochs if "val_loss" in r],
            [r["val_loss"] for r in epochs if "val_loss" in r],
            "o-",
            color="tab:orange",
            label="validation loss",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if all(r["loss"] > 0 for r in steps) and steps else "linear")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    if scores:
        bx = fig.add_subplot(1, 2, 2)
        for key in scores:
            bx.plot(
                [r["epoch"] for r in epochs if key in r],
                [r[key] for r in epochs if key in r],
                "o-",
                label=key.removeprefix("val_").replace("_", "-"),
            )
        bx.set_xlabel("epoch")
        bx.set_ylabel("validation score")
        bx.legend(loc="lower right")
        bx.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09 if scores else 0.14, right=0.98, bottom=0.13, top=0.96, wspace=0.22)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
