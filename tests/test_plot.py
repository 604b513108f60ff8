"""curves.svg: a chart that parses as SVG, with each curve where its data puts it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np

from onnxkit.train.plot import BLUE, FRAME, ORANGE, PALE_BLUE, PANEL, plot_curves

SVG = "{http://www.w3.org/2000/svg}"


def records(epochs: int, validation: bool) -> list[dict]:
    steps = [{"event": "step", "step": s, "loss": 2.0 / s} for s in range(1, 10 * epochs + 1)]
    ends = [{"event": "epoch", "epoch": e, "step": 10 * e, "train_loss": 1.0 / e} for e in range(1, epochs + 1)]
    if validation:
        for e, r in enumerate(ends, 1):
            r.update(val_loss=1.2 / e, val_accuracy=1 - 0.5 / e, val_macro_f1=1 - 0.6 / e)
    return steps + ends


def drawn(path) -> tuple[ET.Element, dict[str, list[np.ndarray]]]:
    """The parsed chart, and its polylines' points by colour."""
    root = ET.parse(path).getroot()
    lines: dict[str, list[np.ndarray]] = {}
    for line in root.iter(SVG + "polyline"):
        points = np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])
        lines.setdefault(line.get("stroke"), []).append(points)
    return root, lines


def test_the_chart_has_a_score_panel_only_with_validation(tmp_path):
    plot_curves(records(20, validation=True), tmp_path / "both.svg")
    plot_curves(records(20, validation=False), tmp_path / "loss.svg")
    both, both_lines = drawn(tmp_path / "both.svg")
    loss, loss_lines = drawn(tmp_path / "loss.svg")
    assert (int(both.get("width")), int(both.get("height"))) == (2 * PANEL[0], PANEL[1])
    assert (int(loss.get("width")), int(loss.get("height"))) == PANEL
    frames = [r for r in both.iter(SVG + "rect") if r.get("stroke") == FRAME]
    assert len(frames) == 2 and len([r for r in loss.iter(SVG + "rect") if r.get("stroke") == FRAME]) == 1
    # validation loss and macro-F1 in orange, the epoch losses and accuracy in blue; the scores right of the losses
    assert len(both_lines[ORANGE]) == 2 and len(both_lines[BLUE]) == 2 and ORANGE not in loss_lines
    assert both_lines[ORANGE][1][:, 0].min() > PANEL[0] > both_lines[ORANGE][0][:, 0].max()
    texts = {t.text for t in both.iter(SVG + "text")}
    assert {"train loss (step)", "train loss (epoch)", "validation loss", "accuracy", "macro-f1", "epoch",
            "optimizer step"} <= texts


def test_each_curve_sits_where_its_values_put_it(tmp_path):
    plot_curves(records(20, validation=True), tmp_path / "curves.svg")
    _, lines = drawn(tmp_path / "curves.svg")
    loss, accuracy = lines[BLUE]  # train loss per epoch (log axis: every loss is positive), accuracy per epoch
    epochs = np.arange(1, 21)
    for points, xs, ys in ((loss, 10.0 * epochs, np.log10(1.0 / epochs)), (accuracy, epochs, 1 - 0.5 / epochs)):
        for data, pixels in ((xs, points[:, 0]), (ys, -points[:, 1])):  # SVG's y grows downwards
            slope, offset = np.polyfit(data, pixels, 1)
            assert slope > 0 and np.abs(slope * data + offset - pixels).max() < 0.06  # coordinates have 1 decimal
    # every point inside its panel's plot area
    assert loss[:, 0].min() > 70 and loss[:, 0].max() < PANEL[0] - 20 and 20 < loss[:, 1].min()
    assert loss[:, 1].max() < PANEL[1] - 50


def test_losses_that_are_all_nan_give_an_empty_chart(tmp_path):
    path = tmp_path / "curves.svg"
    plot_curves([{"event": "step", "step": 1, "loss": float("nan")}], path)
    root, lines = drawn(path)
    assert int(root.get("width")) == PANEL[0] and not lines and not list(root.iter(SVG + "text"))
    assert [p.name for p in tmp_path.iterdir()] == ["curves.svg"]  # written in place of a temporary file


def test_a_curve_skips_values_that_are_not_finite(tmp_path):
    rows = records(5, validation=False)
    rows[3]["loss"] = math.inf
    path = tmp_path / "curves.svg"
    plot_curves(rows, path)
    _, lines = drawn(path)
    assert sum(len(p) for p in lines[PALE_BLUE]) == 49  # the step losses but the infinite one


def test_a_log_axis_of_less_than_a_decade_gets_linear_ticks():
    from onnxkit.train.plot import _ticks

    assert _ticks(0.35, 0.75, True) == [0.4, 0.5, 0.6, 0.7]  # 1-2-5 times powers of ten: 0.5 alone
    assert _ticks(0.003, 2.0, True) == [0.01, 0.1, 1.0]  # decades, as before
