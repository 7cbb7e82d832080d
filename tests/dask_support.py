"""A dask.distributed cluster of two worker processes, for the tests that run on one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def two_worker_client(*, env: dict[str, str] | None = None) -> Iterator:
    """A Client of a LocalCluster with two single-threaded worker processes.

    ``env``: environment variables the workers start with (this process keeps its own).
    """
    import distributed

    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GiB"
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
