"""What this CPU can do fast, read from its feature flags (never guessed from its name).

:func:`cpu_info` reads ``/proc/cpuinfo`` (Linux; elsewhere the flags are unknown and only the always-available
profile is chosen). ``WILDLIFE_VISION_CPU_FLAGS`` (space- or comma-separated flags, e.g. ``"avx2 fma"``)
replaces the detected flags, so that profile selection can be tested, or pinned, for another machine.

The families, fastest matrix units first:

- ``amx``: Intel AMX tiles (``amx_bf16``/``amx_int8``; Sapphire Rapids and later) — bf16 and int8 matrix units;
- ``avx512_bf16``: AVX-512 with bf16 dot products (``avx512_bf16``; Cooper Lake, AMD Zen 4 and later);
- ``avx512_vnni``: AVX-512 with int8 dot products (``avx512_vnni``; Cascade Lake, Ice Lake) or AVX-VNNI;
- ``avx2``: AVX2 + FMA only (e.g. AMD EPYC Zen 2/3, older Xeons);
- ``baseline``: none of the above.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional

ENV_FLAGS = "WILDLIFE_VISION_CPU_FLAGS"
#: the flags that decide a profile
RELEVANT = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
FAMILIES = ("amx", "avx512_bf16", "avx512_vnni", "avx2", "baseline")


@dataclass(frozen=True)
class CpuInfo:
    model: str
    vendor: str
    flags: FrozenSet[str] = field(default_factory=frozenset)
    source: str = "/proc/cpuinfo"

    @property
    def bf16(self) -> bool:
        """Native bf16 matrix arithmetic (AVX-512 BF16 or AMX-BF16)."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX-INT8)."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def family(self) -> str:
        if {"amx_bf16", "amx_int8"} & self.flags:
            return "amx"
        if "avx512_bf16" in self.flags:
            return "avx512_bf16"
        if self.vnni:
            return "avx512_vnni"
        if "avx2" in self.flags:
            return "avx2"
        return "baseline"

    def fp32_flops_per_cycle(self) -> int:
        """Peak fp32 FLOP per cycle and core: 2 FMA pipes x lanes x 2. Intel cores with AVX-512 have two 512-bit
        FMA pipes (64); AMD Zen 4 runs AVX-512 on 256-bit pipes (32), as every AVX2 core does."""
        if "avx512f" in self.flags and self.vendor != "AuthenticAMD":
            return 64
        return 32 if "avx2" in self.flags else 16

    def to_dict(self) -> Dict[str, object]:
        return {"model": self.model, "vendor": self.vendor, "family": self.family,
                "features": sorted(f for f in self.flags if f in RELEVANT), "bf16": self.bf16, "vnni": self.vnni,
                "fp32_flops_per_cycle_per_core": self.fp32_flops_per_cycle(), "source": self.source}


def read_cpuinfo() -> Dict[str, str]:
    """The first value of every key of ``/proc/cpuinfo`` ({} where there is none)."""
    out: Dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def cpu_info(flags: Optional[str] = None) -> CpuInfo:
    """This machine's CPU (``flags``, or ``$WILDLIFE_VISION_CPU_FLAGS``, replaces the detected flags)."""
    info = read_cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    vendor = info.get("vendor_id", "")
    override = flags if flags is not None else os.environ.get(ENV_FLAGS)
    if override is not None:
        return CpuInfo(model=model, vendor=vendor, flags=frozenset(override.replace(",", " ").split()),
                       source="given" if flags is not None else f"${ENV_FLAGS}")
    return CpuInfo(model=model, vendor=vendor, flags=frozenset(info.get("flags", "").split()),
                   source="/proc/cpuinfo" if info else "unknown (no /proc/cpuinfo)")


__all__ = ["CpuInfo", "cpu_info", "read_cpuinfo", "ENV_FLAGS", "FAMILIES", "RELEVANT"]
