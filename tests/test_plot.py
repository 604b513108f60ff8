"""curves.png: the PNG writer against Pillow's decoder, and what the chart shows."""

from __future__ import annotations

import numpy as np
from PIL import Image

from onnxkit.train.plot import BLUE, ORANGE, PANEL, plot_curves, png_bytes


def test_png_bytes_decode_to_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (7, 5, 3), (64, 33, 3)]:  # random rows: every Up difference wraps somewhere
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path = tmp_path / "x.png"
        path.write_bytes(png_bytes(pixels))
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (shape[1], shape[0])
            np.testing.assert_array_equal(np.asarray(image), pixels)


def records(epochs: int, validation: bool) -> list[dict]:
    steps = [{"event": "step", "step": s, "loss": 2.0 / s} for s in range(1, 10 * epochs + 1)]
    ends = [{"event": "epoch", "epoch": e, "step": 10 * e, "train_loss": 1.0 / e} for e in range(1, epochs + 1)]
    if validation:
        for e, r in enumerate(ends, 1):
            r.update(val_loss=1.2 / e, val_accuracy=1 - 0.5 / e, val_macro_f1=1 - 0.6 / e)
    return steps + ends


def colour_share(image: np.ndarray, colour: tuple[int, int, int]) -> float:
    return float(np.mean(np.all(np.abs(image.astype(int) - colour) <= 8, axis=-1)))


def test_the_chart_has_a_score_panel_only_with_validation(tmp_path):
    plot_curves(records(20, validation=True), tmp_path / "both.png")
    plot_curves(records(20, validation=False), tmp_path / "loss.png")
    with Image.open(tmp_path / "both.png") as both, Image.open(tmp_path / "loss.png") as loss:
        assert both.size == (2 * PANEL[0], PANEL[1]) and loss.size == PANEL
        both, loss = np.asarray(both), np.asarray(loss)
    # validation loss and macro-F1 are drawn in orange, the epoch losses and accuracy in blue
    assert colour_share(both, ORANGE) > 0.002 and colour_share(both, BLUE) > 0.002
    assert colour_share(loss, ORANGE) == 0 and colour_share(loss, BLUE) > 0.002


def test_losses_that_are_all_nan_give_an_empty_chart(tmp_path):
    path = tmp_path / "curves.png"
    plot_curves([{"event": "step", "step": 1, "loss": float("nan")}], path)
    with Image.open(path) as image:
        assert image.size == PANEL and np.all(np.asarray(image) == 255)  # white: no axes without points
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # written in place of a temporary file
