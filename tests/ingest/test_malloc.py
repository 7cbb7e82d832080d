"""Filling a batch on a dask worker: glibc reuses freed memory instead of faulting it in afresh.

Counted in a fresh interpreter started with the environment dask's nanny gives
its workers (``MALLOC_TRIM_THRESHOLD_=65536``): minor page faults of a loop that
allocates, touches and frees 1 MiB numpy arrays, as the locate step does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's allocator only",
)

PROBE = textwrap.dedent(
    """
    import json, resource
    import numpy as np
    from xr_methyl.ingest._malloc import reuse_freed_memory

    def faults_of_loop():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            a = np.ones(1 << 17)  # 1 MiB, touched (numpy asks for huge pages from 4 MiB on)
            del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    out = {"before": faults_of_loop()}
    with reuse_freed_memory():
        faults_of_loop()  # the first allocations fault in the heap once
        out["inside"] = faults_of_loop()
    out["after"] = faults_of_loop()
    print(json.dumps(out))
    """
)


def _faults(env: dict[str, str]) -> dict[str, int]:
    import json

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_with_dask_worker_environment_freed_memory_is_reused_then_given_back():
    faults = _faults({"MALLOC_TRIM_THRESHOLD_": "65536"})
    pages = 20 * (1 << 20) // 4096
    # Outside: every array is mapped afresh, a fault per page.
    assert faults["before"] >= 0.9 * pages
    # Inside: the same loop reuses the heap.
    assert faults["inside"] < 0.05 * pages
    # Afterwards the environment's setting holds again.
    assert faults["after"] >= 0.9 * pages


def test_without_the_environment_setting_nothing_is_changed():
    # glibc's adaptive threshold already reuses the memory; the context must not switch it off.
    faults = _faults({})
    pages = 20 * (1 << 20) // 4096
    assert faults["before"] < 0.2 * pages
    assert faults["after"] < 0.05 * pages
