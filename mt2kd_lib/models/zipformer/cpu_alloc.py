"""Process-wide glibc malloc tuning for CPU training of the Zipformer2 encoder.

PyTorch's CPU allocator is plain ``malloc``.  glibc serves blocks above its mmap threshold (at most
32 MiB) with fresh ``mmap`` pages and unmaps them on free, so every large activation (the
Conv2dSubsampling front-end makes tensors of 100-400 MB) is page-faulted and zeroed by the kernel
again on every use.  On the 2-core training machine that made elementwise ops 3-7x slower than
their memory bandwidth allows.  Serving all blocks from the heap and not trimming it lets freed
activations be reused.  Trimming is off by default too: a training step frees GBs at its end and
the next step needs them again, so any finite threshold below the step's peak means re-faulting
them every step.  The price: the process keeps its peak heap mapped (peak memory is unchanged).
"""

import ctypes
import ctypes.util
import logging
import sys
from typing import Optional

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4

_applied: Optional[bool] = None


def tune_cpu_malloc(trim_threshold: Optional[int] = None) -> bool:
    """Make glibc keep freed large blocks for reuse (no mmap for big blocks, no heap trimming or
    trimming only above ``trim_threshold`` free bytes at the heap top).

    Idempotent (the first call's settings stay); returns True when the settings are active, False
    where unsupported (non-glibc platforms).  Call once near the start of a CPU training process.
    """
    global _applied
    if _applied is not None:
        return _applied
    if trim_threshold is not None and not 0 < trim_threshold < 2 ** 31:
        raise ValueError(f"trim_threshold must be in (0, 2**31) or None, got {trim_threshold}")
    _applied = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc reads a trim threshold of -1 as "never trim" (see mallopt(3))
    trim = -1 if trim_threshold is None else int(trim_threshold)
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, trim) == 1
    if not ok:
        logging.warning("mallopt rejected the CPU allocator settings; continuing without them")
    _applied = ok
    return ok


__all__ = ["tune_cpu_malloc"]
