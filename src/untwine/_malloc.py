"""Keep freed memory in the process (issue 11, "the training step's page-fault tax").

A training step allocates and frees the same few hundred MB of tensors every step. glibc's malloc, by default,
serves blocks above a (dynamic) mmap threshold with fresh mmaps and returns the top of the heap to the OS when more
than the trim threshold is free, so every step faults its memory in again: ~2.2 M minor page faults and ~5 s of
system time in 150 steps. Told to keep its memory (the settings below, as `MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=1073741824` would), it reuses it: the process's resident set
stays at its peak instead of breathing, and the faults disappear.

Applied once when `untwine` is imported, which covers the CLI, library use and Ray/joblib workers (they import
untwine). glibc only; a no-op elsewhere. Opt out with UNTWINE_MALLOC=default; any MALLOC_*_ variable set in the
environment is left to glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = {
    # (parameter, environment variable glibc reads for it, value)
    "mmap_threshold": (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 32 * 1024**2),  # glibc's maximum on 64-bit
    "trim_threshold": (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 2**31 - 1),  # mallopt takes an int
    "top_pad": (M_TOP_PAD, "MALLOC_TOP_PAD_", 1024**3),
}
OPT_OUT = "UNTWINE_MALLOC"

applied: dict[str, int] = {}  # what `keep_freed_memory` set, for diagnostics


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl and others lack it)
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> dict[str, int]:
    """Apply SETTINGS with mallopt (glibc), unless UNTWINE_MALLOC=default; returns what was set."""
    if os.environ.get(OPT_OUT, "").strip().lower() in ("default", "0", "off", "no"):
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    for name, (parameter, variable, value) in SETTINGS.items():
        if variable in os.environ:
            continue
        if libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1:
            applied[name] = value
    return dict(applied)
