"""Let glibc reuse freed memory while a batch is filled, in processes that told it not to.

dask's nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that
they hand freed memory back to the kernel at once.  Setting that variable also
switches off glibc's adaptive mmap threshold, so every numpy temporary over
128 KiB is mapped fresh and unmapped when freed: the locate step's temporaries
(a few MiB each, dozens per million long rows) then cost a page fault per
4 KiB, and two workers filling batches side by side ran 1.7x slower than with
glibc's defaults.

:func:`reuse_freed_memory` raises both thresholds while a batch is filled and
restores the ones the environment set afterwards, giving the memory back
(``malloc_trim``), so a worker holds no more between tasks than dask expects.
It does nothing where the thresholds were left to glibc (its adaptive threshold
already reuses memory, and setting one would switch that off for good) or
where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT = 128 * 1024  # both thresholds' default in glibc
_FILL_MMAP_THRESHOLD = 32 << 20  # glibc's largest (64-bit); larger blocks are mapped anyway
_FILL_TRIM_THRESHOLD = 512 << 20

_lock = threading.Lock()
_active = 0
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = libc
            except (OSError, AttributeError):  # not glibc (musl has no mallopt)
                pass
    return _libc


def _environment_threshold(name: str) -> int | None:
    value = os.environ.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Within the block, glibc keeps freed memory for reuse (see the module's docstring)."""
    global _active
    trim = _environment_threshold("MALLOC_TRIM_THRESHOLD_")
    mmap = _environment_threshold("MALLOC_MMAP_THRESHOLD_")
    libc = _glibc() if trim is not None or mmap is not None else None
    if not libc:
        yield
        return
    with _lock:  # threads of one worker share the setting: the first in raises it, the last out restores it
        if _active == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _FILL_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _FILL_TRIM_THRESHOLD)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, mmap if mmap is not None else _GLIBC_DEFAULT)
                libc.mallopt(_M_TRIM_THRESHOLD, trim if trim is not None else _GLIBC_DEFAULT)
                libc.malloc_trim(0)
