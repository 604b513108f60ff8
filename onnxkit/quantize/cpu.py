"""What the CPU can do for int8, and the quantization defaults that follow from it."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

_X86 = {"x86_64", "amd64", "i386", "i686"}


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set facts that change how int8 should be quantized."""

    machine: str
    avx2: bool = False
    avx512: bool = False
    vnni: bool = False  # AVX512-VNNI or AVX-VNNI: u8 x s8 dot products without overflow

    @property
    def is_x86(self) -> bool:
        return self.machine.lower() in _X86

    @property
    def reduce_range(self) -> bool:
        """Quantize weights to 7 bits?

        Without VNNI, x86 int8 kernels multiply u8 activations by s8 weights with
        `vpmaddubsw`, whose 16-bit sums can saturate; 7-bit weights keep them exact.
        """
        return self.is_x86 and not self.vnni

    @property
    def isa(self) -> str:
        """'x86_64 AVX2, no VNNI', 'x86_64 AVX-512 with VNNI', 'aarch64'."""
        if not self.is_x86:
            return self.machine
        isa = "AVX-512" if self.avx512 else "AVX2" if self.avx2 else "SSE"
        return f"{self.machine} {isa} with VNNI" if self.vnni else f"{self.machine} {isa}, no VNNI"

    def describe(self, reduce_range: bool | None = None) -> str:
        """The ISA and the int8 weights used: the CPU's default, or `reduce_range` as the caller chose."""
        if reduce_range is not None and reduce_range != self.reduce_range:
            return f"{self.isa}: {'7-bit weights (reduce_range)' if reduce_range else 'full 8-bit weights'}, as asked"
        if self.reduce_range:
            return f"{self.isa}: 7-bit weights (reduce_range) avoid u8s8 overflow"
        return f"{self.isa}: full 8-bit weights"


def parse_cpuinfo_flags(text: str) -> set[str]:
    """The `flags` of the first processor in /proc/cpuinfo text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def features_from_flags(machine: str, flags: set[str]) -> CpuFeatures:
    """CpuFeatures from a machine name and Linux cpuinfo flags."""
    return CpuFeatures(
        machine=machine,
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
    )


def detect() -> CpuFeatures:
    """Features of this machine (Linux reads /proc/cpuinfo; elsewhere only the architecture)."""
    machine = platform.machine() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    try:
        flags = parse_cpuinfo_flags(cpuinfo.read_text()) if cpuinfo.exists() else set()
    except OSError:
        flags = set()
    return features_from_flags(machine, flags)
