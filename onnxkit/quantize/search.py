"""`--mode auto`: try the sensible int8 candidates, keep the fastest within the allowed drop (of those
timed within noise of the fastest, the one that loses least)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx

from onnxkit.errors import OnnxkitError
from onnxkit.quantize import analysis, latency
from onnxkit.quantize.accuracy import Score
from onnxkit.quantize.data import Feeds
from onnxkit.quantize.passes import Quantizer
from onnxkit.quantize.report import SLOWER_BEYOND_NOISE, Candidate, candidate_table
from onnxkit.quantize.settings import Settings
from onnxkit.runtime.session import error_reason, raised_by_onnxruntime


@dataclass
class Picked:
    settings: Settings
    model: onnx.ModelProto
    candidates: list[Candidate]
    latency_ms: dict[int, dict[str, float | None]]
    latency_spread: dict[int, tuple[float, float]]
    reason: str


def candidates(profile: analysis.ModelProfile, per_channel: bool | None, reduce_range: bool) -> list[Settings]:
    """Dynamic per-tensor/per-channel when there are MatMul/Gather weights; static QDQ
    per-channel/per-tensor with min-max ranges, and per-channel with entropy and percentile."""
    out = []
    channels = (False, True) if per_channel is None else (per_channel,)
    if profile.nodes("dense") or profile.nodes("embedding"):
        out += [Settings("dynamic", per_channel=pc, reduce_range=reduce_range) for pc in channels]
    static = [(pc, "minmax") for pc in reversed(channels)]
    static += [(channels[-1], m) for m in ("entropy", "percentile")]
    out += [Settings("static", per_channel=pc, method=m, reduce_range=reduce_range) for pc, m in static]
    return out


def _speed_key(c: Candidate) -> tuple[float, int]:
    timed = [ms for _, ms in sorted(c.latency_ms.items()) if ms is not None]
    return (timed[-1] if timed else float("inf"), c.size_bytes or 0)


def pick(within: list[Candidate]) -> Candidate:
    """The fastest at the largest batch; candidates timed within noise of it are as fast, and of
    those the one with the smallest drop wins."""
    fastest = min(_speed_key(c)[0] for c in within)
    ties = [c for c in within if _speed_key(c)[0] <= fastest * SLOWER_BEYOND_NOISE]
    return min(ties, key=lambda c: (c.drop, _speed_key(c)))


def run(
    quantizer: Quantizer,
    *,
    per_channel: bool | None,
    reduce_range: bool,
    calibration: Callable[[], list[Feeds]],
    score: Callable[[onnx.ModelProto], Score],
    baseline: Score,
    max_drop: float,
    feeds: Mapping[int, Feeds],
    log: Callable[[str], None],
) -> Picked:
    """Quantize with every candidate, score and time them all, pick the fastest within `max_drop`."""
    profile = analysis.profile(quantizer.model)
    if not any(profile.weighted.values()):
        raise OnnxkitError(quantizer.nothing_message("auto"), params=["mode", "exclude"])
    batches = calibration()
    tried: list[tuple[Candidate, Settings, onnx.ModelProto | None]] = []
    for settings in candidates(profile, per_channel, reduce_range):
        log(f"trying {settings.label} ...")
        cand = Candidate(settings.label, settings.as_dict())
        model = None
        try:
            model = quantizer.run(settings, batches)
        except OnnxkitError as e:
            cand.error = str(e)
        except Exception as e:  # onnxruntime's quantizer failing on this one (its errors share no base class)
            if not raised_by_onnxruntime(e):
                raise
            cand.error = f"onnxruntime failed on it ({error_reason(e)})"  # the others may still do
        if model is not None:
            cand.size_bytes = len(model.SerializeToString())
            result = score(model)
            cand.metric, cand.drop = result.value, baseline.drop_to(result)
            cand.within = cand.drop <= max_drop
        tried.append((cand, settings, model))
    good = [(c, s, m) for c, s, m in tried if m is not None]
    if not good:
        raise OnnxkitError(tried[0][0].error)
    log("timing the candidates ...")
    models = {"original": quantizer.model.SerializeToString()}
    models.update({c.label: m.SerializeToString() for c, _, m in good})
    ms = latency.measure(models, feeds, budget_s=0.25 * len(models))
    for c, _, _ in good:
        c.latency_ms = ms[c.label]
    within = [(c, s, m) for c, s, m in good if c.within]
    if not within:
        log("\n".join(candidate_table([c for c, _, _ in tried], baseline.unit)))
        best = min((c for c, _, _ in good), key=lambda c: c.drop)
        raise OnnxkitError(
            f"no candidate is within max_drop {max_drop} (the best, {best.label}, "
            f"{baseline.worse_by(best.drop)}); nothing written. Raise max_drop, give more "
            "calib data, or exclude sensitive nodes (sqnr_rows ranks them)",
            params=["max_drop", "calib", "exclude", "sqnr_rows"],
        )
    chosen = pick([c for c, _, _ in within])
    _, settings, model = next(t for t in within if t[0] is chosen)
    chosen.chosen = True
    # the report's figures: the two models timed on their own, as the other modes time them (beside six
    # other sessions, a PyTorch CNN's static int8 read 0.74x where alone it is 1.01x)
    log("timing the chosen model against the original ...")
    spread: dict[int, tuple[float, float]] = {}
    alone = latency.measure({"original": models["original"], "quantized": models[chosen.label]}, feeds, spread=spread)
    return Picked(
        settings=settings,
        model=model,
        candidates=[c for c, _, _ in tried],
        latency_ms={b: {"original": alone["original"][b], "quantized": alone["quantized"][b]} for b in feeds},
        latency_spread=spread,
        reason=f"--mode auto: fastest of {len(good)} candidates within {max_drop} {baseline.unit} (of the equally "
               "fast, the smallest drop)",
    )
