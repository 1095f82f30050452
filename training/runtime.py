"""Process-level settings that make CPU training fast.

The CPU training step allocates and frees hundreds of large activation and gradient buffers per step. glibc's
malloc serves each buffer over 128 KiB-32 MiB with a fresh ``mmap`` and gives it back with ``munmap`` when it is
freed, so every step page-faults its whole working set in again: on the project's 2-core machine that is a third
of ``tf_efficientnet_lite0``'s step time spent in the kernel (8 million minor faults in 9 steps). Raising the
mmap and trim thresholds keeps freed memory in the process for reuse, the glibc counterpart of running torch on
jemalloc or tcmalloc as the PyTorch CPU performance guides advise. The cost is memory held rather than handed
back: peak RSS of a lite0 training step at batch 32 grew from about 3.7 to 4.3-4.7 GB in the benchmark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from typing import Optional

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks up to this size come from the heap (and are reused); glibc versions that refuse 1 GiB accept 32 MiB,
# their documented maximum on 64-bit systems
_MMAP_THRESHOLDS = (1 << 30, 32 << 20)
_TRIM_THRESHOLD = 1 << 30

_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed large blocks for reuse (see the module docstring).

    Returns True when the settings are in effect (now or from an earlier call), False where they cannot apply
    (not Linux/glibc). Call it once, early, in the process that runs the training step; DataLoader worker
    processes forked after it inherit the settings.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux":
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        log.debug("mallopt not available in %s; allocator settings left as they are", name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not any(mallopt(_M_MMAP_THRESHOLD, v) == 1 for v in _MMAP_THRESHOLDS):
        return False
    if mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        return False
    _applied = True
    log.debug("malloc keeps freed memory (mmap and trim thresholds raised)")
    return True


def apply_keep_freed_memory(setting: Optional[bool], device_type: str) -> bool:
    """The ``run.keep_freed_memory`` setting resolved (None = on for CPU) and applied; True when in effect."""
    on = setting if setting is not None else device_type == "cpu"
    return keep_freed_memory() if on else False
