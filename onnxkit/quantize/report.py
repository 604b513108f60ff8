"""What quantization cost and bought: size, latency and accuracy, as text and JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from onnxkit.files import write_text
from onnxkit.summary import human_bytes

# A latency ratio above this is "slower"; below it, medians of the same two models vary from run to run
# (fp16 of the zoo's digits-cnn: 0.96x, 1.00x, 1.03x in three runs on a 2-core machine).
SLOWER_BEYOND_NOISE = 1.05
# Quartiles of the run-by-run quantized/original ratios further apart than this factor: the timing was unsteady.
# On a quiet 2-core machine they lie within ~10% (a PyTorch transformer encoder, dynamic int8: 1.03-1.08 at batch 1);
# with other processes using both cores, 0.14-10.5 at batch 64, and the medians' ratio read 7.45x, 0.15x, 0.27x in
# three runs of the same two models (0.95x when the machine is quiet).
UNSTEADY_SPREAD = 1.5


def _bytes(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)  # the units of `onnxkit inspect`


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _change(accuracy: dict[str, Any]) -> str:
    """Quantized minus original, and which way that is: '-0.28 points (worse)', '-16.75 loss (better)'."""
    change = accuracy["change"]
    if accuracy["unit"] != "points":
        shown = f"{change:+.4g}"
    elif round(change, 2) or not change:
        shown = f"{change:+.2f}"
    else:  # under 0.005 points: '+0.00 points (better)' said nothing
        shown = f"{change:+.2g}"
    drop = accuracy["drop"]
    return f"{shown} {accuracy['unit']} ({'worse' if drop > 0 else 'better' if drop < 0 else 'same'})"


@dataclass
class Candidate:
    """One quantization tried by `--mode auto`."""

    label: str
    settings: dict
    size_bytes: int | None = None
    latency_ms: dict[int, float | None] = field(default_factory=dict)
    metric: float | None = None
    drop: float | None = None
    within: bool = False
    chosen: bool = False
    error: str | None = None


@dataclass
class Report:
    """The result of one `quantize` run; `text()` for people, `write()` for machines."""

    model: str
    output: str | None
    settings: dict
    reason: str
    cpu: str
    size_bytes: dict[str, int]
    latency_ms: dict[int, dict[str, float | None]] = field(default_factory=dict)
    latency_spread: dict[int, tuple[float, float]] = field(default_factory=dict)  # quartiles of run-by-run ratios
    accuracy: dict[str, Any] | None = None
    candidates: list[Candidate] = field(default_factory=list)
    sqnr: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """Quantized over original file size."""
        return self.size_bytes["quantized"] / self.size_bytes["original"]

    def __str__(self) -> str:  # print(result.report) shows the table, as the command prints it
        return self.text()

    def latency_ratio(self, batch: int) -> float | None:
        """Quantized over original median latency at `batch` rows (below 1: faster); None where not timed."""
        row = self.latency_ms.get(batch, {})
        return _ratio(row.get("original"), row.get("quantized"))

    def unsteady_batches(self) -> list[int]:
        """Batch sizes whose timing was unsteady: the run-by-run ratios' quartiles more than UNSTEADY_SPREAD apart."""
        return [b for b, (lo, hi) in self.latency_spread.items() if lo > 0 and hi / lo > UNSTEADY_SPREAD]

    def unsteady_note(self) -> str | None:
        """What to make of latency figures timed while the CPU was busy; None when the timing was steady."""
        unsteady = self.unsteady_batches()
        if not unsteady:
            return None
        ranges = ", ".join(f"{_x(self.latency_spread[b][0])}-{_x(self.latency_spread[b][1])} at batch {b}"
                           for b in unsteady)
        return (f"the latency figures are unsteady (run-by-run ratios {ranges} between quartiles, where a quiet CPU "
                "keeps them within ~10%): other processes were likely using the CPU; rerun on an idle machine, or "
                "with --no-latency")

    def slower_everywhere(self) -> bool:
        """Whether the quantized model ran slower than the original at every batch size timed, by more
        than timing noise (SLOWER_BEYOND_NOISE: the same two models differ by a few % from run to run),
        with steady timings (not said of figures a busy CPU made up)."""
        ratios = [self.latency_ratio(b) for b in self.latency_ms]
        steady = not self.unsteady_batches()
        return steady and bool(ratios) and all(r is not None and r > SLOWER_BEYOND_NOISE for r in ratios)

    def slower_note(self, excluded: bool = False) -> str | None:
        """For a quantized model slower at every batch size timed, what it still buys (its smaller size, or
        nothing, with what to try instead); None otherwise. `excluded`: whether nodes were kept from it."""
        if not self.slower_everywhere():
            return None
        slower = "the quantized model is slower than the original at every batch size timed"
        if self.size_ratio < 1:
            return f"{slower}: here it buys only its smaller size"
        fewer = "drop some --exclude items, or " if excluded else ""
        fp16 = "" if self.settings["mode"] == "fp16" else "fp16 halves the float weights; "
        return (f"{slower} and no smaller ({_x(self.size_ratio)} the size): it buys nothing here; keep the original, "
                f"or {fewer}try another --mode ({fp16}auto compares the int8 ones)")

    def bigger_note(self, excluded: bool = False) -> str | None:
        """For a quantized model larger than the original (a tiny model: what the mode adds, scales and quantize
        nodes or casts, outweighs what it saves), a line saying so; None otherwise, or when `slower_note` says it.
        `excluded`: whether nodes were kept from it (then what they keep float may be why)."""
        if self.size_ratio <= 1 or self.slower_everywhere():
            return None
        added = {"fp16": "fp16's Cast nodes", "int4": "int4's block scales"}.get(self.settings["mode"],
                                                                                 "int8's scales and quantize nodes")
        bigger = f"the quantized model is larger than the original ({_x(self.size_ratio)} the size)"
        if excluded:
            return (f"{bigger}: what --exclude keeps float left too little for {added} to pay off; drop some "
                    "--exclude items")
        return f"{bigger}: the model is too small for {added} to pay off in size"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size_bytes"]["ratio"] = round(self.size_ratio, 4)
        spread = data.pop("latency_spread")
        data["latency_ms"] = {
            f"batch_{b}": {**row, "ratio": self.latency_ratio(b),
                           **({"run_ratio_quartiles": list(spread[b])} if b in spread else {})}
            for b, row in self.latency_ms.items()
        }
        for cand in data["candidates"]:
            cand["latency_ms"] = {f"batch_{b}": ms for b, ms in cand["latency_ms"].items()}
        return data

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def write(self, path: str | os.PathLike) -> None:
        """Write the report as JSON, atomically."""
        write_text(path, self.json())

    def text(self) -> str:
        """The report as an aligned table (plus the candidates of `--mode auto`)."""
        quant = self.settings["mode"] if self.settings["mode"] in ("int4", "fp16") else "int8"
        lines = [f"quantized {self.model} -> {self.output or '(not written)'}", f"  why: {self.reason}"]
        lines.append(f"  cpu: {self.cpu}")
        rows = [("", "fp32", quant, "ratio")]
        rows.append(
            ("size", _bytes(self.size_bytes["original"]), _bytes(self.size_bytes["quantized"]),
             _x(self.size_ratio))
        )  # fmt: skip
        for batch, row in self.latency_ms.items():
            rows.append(
                (f"latency b{batch}", _ms(row["original"]), _ms(row["quantized"]),
                 _x(self.latency_ratio(batch)))
            )  # fmt: skip
        if self.accuracy:
            acc = self.accuracy
            rows.append((acc["metric"], acc["original_shown"], acc["quantized_shown"], _change(acc)))
        lines += _table(rows, indent="  ")
        kept = self.accuracy.get("agreement") if self.accuracy else None
        if kept:
            lines.append(f"  predictions kept: {kept['share']:.2%} of the {kept['rows']:,} rows keep the fp32 model's "
                         "class")
        if self.candidates:
            noise = f"{SLOWER_BEYOND_NOISE - 1:.0%}"  # timed as fast as the fastest
            lines.append(f"  candidates (fastest at the largest batch within the allowed drop wins; within {noise}, "
                         "the smallest drop; timed against each other, not against the fp32 model as above):")
            lines += candidate_table(self.candidates, self.accuracy["unit"] if self.accuracy else "points")
        if self.sqnr:
            lines.append("  SQNR, worst first (dB; higher is better, below ~20 dB deserves a look):")
            lines += _table(
                [("tensor", "kind", "node (for --exclude)", "SQNR")]
                + [(s["tensor"], s["kind"], s.get("node") or "-", f"{s['sqnr_db']:.1f}") for s in self.sqnr],
                indent="  ",
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def candidate_table(candidates: list[Candidate], unit: str) -> list[str]:
    """The `--mode auto` table: * chosen, x over the allowed drop."""
    batches = sorted({b for c in candidates for b in c.latency_ms})
    rows = [("", "candidate", "size", *(f"b{b}" for b in batches), f"drop ({unit})")]
    for c in candidates:
        mark = "*" if c.chosen else " " if c.within or c.error else "x"
        if c.error:
            rows.append((mark, c.label, f"failed: {c.error}"))
            continue
        drop = "-" if c.drop is None else f"{c.drop:+.2f}"
        rows.append(
            (mark, c.label, _bytes(c.size_bytes), *(_ms(c.latency_ms.get(b)) for b in batches), drop)
        )
    return _table(rows, indent="  ", left=2)


def _table(rows: list[tuple[str, ...]], indent: str = "", left: int = 1) -> list[str]:
    """Left-align the first `left` columns, right-align the rest; short rows span freely."""
    width = max(len(r) for r in rows)
    cols = [max((len(r[i]) for r in rows if i < len(r) and (len(r) == width or i < left)), default=0)
            for i in range(width)]  # a short row's left columns too: a failed candidate's longer label pushed its text
    out = []
    for r in rows:
        if len(r) < width:
            head = [c.ljust(w) for c, w in zip(r[:left], cols, strict=False)]
            out.append(indent + "  ".join(head + list(r[left:])).rstrip())
            continue
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, cols, strict=True))]
        out.append(indent + "  ".join(cells).rstrip())
    return out
