"""The choices one quantization run is made of, validated, and their short labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from onnxkit.errors import OnnxkitError, suggest

MODES = ("dynamic", "static", "int4", "fp16", "auto")
METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("qdq", "qoperator")
BLOCK_SIZES = (16, 32, 64, 128, 256)


def check_choice(param: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`, else an OnnxkitError naming the parameter and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise OnnxkitError(
            f"{param} {value!r}: choose one of {', '.join(choices)}.{suggest(str(value), choices)}", params=[param]
        )
    return value


@dataclass(frozen=True)
class Settings:
    """One concrete quantization: a pass ("dynamic", "static", "int4", "fp16") and its knobs."""

    mode: str
    per_channel: bool = False
    method: str = "minmax"  # static: how activation ranges are calibrated
    format: str = "qdq"  # static: QDQ pairs or QLinear* operators
    reduce_range: bool = False  # int8: 7-bit weights (CPUs without VNNI)
    block_size: int = 32  # int4: weights per scale

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES[:-1])
        check_choice("method", self.method, METHODS)
        check_choice("format", self.format, FORMATS)
        if self.block_size not in BLOCK_SIZES:
            raise OnnxkitError(
                f"block_size {self.block_size}: choose one of {', '.join(map(str, BLOCK_SIZES))}", params=["block_size"]
            )

    @property
    def label(self) -> str:
        """A short name for tables: 'static qdq per-channel minmax', 'int4 block 32'."""
        if self.mode == "fp16":
            return "fp16"
        if self.mode == "int4":
            return f"int4 block {self.block_size}"
        channel = "per-channel" if self.per_channel else "per-tensor"
        if self.mode == "dynamic":
            return f"dynamic {channel}"
        return f"static {self.format} {channel} {self.method}"

    def as_dict(self) -> dict:
        """The settings that apply to this mode, for the JSON report and model metadata."""
        keep = {
            "dynamic": ("per_channel", "reduce_range"),
            "static": ("per_channel", "method", "format", "reduce_range"),
            "int4": ("block_size",),
            "fp16": (),
        }[self.mode]
        return {"mode": self.mode, **{k: v for k, v in asdict(self).items() if k in keep}}
