"""Every use of zarr-python's private API in xr_methyl, in one place.

xr_methyl writes and reads plain Zarr v3, but a few of its fast paths reach
below zarr-python's public API: running a coroutine on zarr's event loop,
its buffer prototype, storing a ready-made shard object, recognising a
regular chunk grid and wrapping a store so that each object written through
it is observed.  These
names are not promised by zarr-python; a zarr upgrade is checked here (and by
``tests/zarrio``), and each caller keeps a path that works without them where
one exists.  zarr is imported inside the functions: the xarray backend imports
this package whenever xarray looks up engines.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any


def event_loop_runner() -> Callable[[Coroutine], Any] | None:
    """zarr's ``sync``: runs a coroutine on zarr's own event loop; None if this zarr has no such function."""
    try:
        from zarr.core.sync import sync
    except ImportError:
        return None
    return sync


def sync(coroutine: Coroutine) -> Any:
    """Run ``coroutine`` on zarr's own event loop and return its result."""
    run = event_loop_runner()
    if run is None:
        raise ImportError("this zarr-python has no zarr.core.sync.sync; xr_methyl supports zarr 3.1")
    return run(coroutine)


def buffer_prototype():
    """zarr's default buffer prototype (what a store's ``get`` and ``set`` take)."""
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


def set_object(store, key: str, data: bytes) -> None:
    """Store ``data`` as the object ``key`` of a zarr store, as zarr itself would write it."""
    sync(store.set(key, buffer_prototype().buffer.from_bytes(data)))


def regular_grid(metadata) -> bool:
    """Whether an array's chunk grid is regular (every chunk, so every shard, of one shape)."""
    from zarr.core.chunk_grids import RegularChunkGrid

    return isinstance(metadata.chunk_grid, RegularChunkGrid)


def watched_store(
    store,
    *,
    before_set: Callable[[str], None] | None = None,
    after_set: Callable[[str, bytes], None] | None = None,
    after_delete: Callable[[str], None] | None = None,
):
    """``store`` wrapped so that each object written or deleted through it is seen by the callbacks.

    ``before_set(key)`` runs before an object is written (it may raise: the
    object is then not written), ``after_set(key, data)`` after, with its
    bytes; ``after_delete(key)`` after an object is deleted.  Keys are relative
    to ``store``.  zarr re-wraps a store for sub-paths through ``_with_store``,
    which the wrapper follows.
    """
    from zarr.storage import WrapperStore

    class Watched(WrapperStore):
        def _with_store(self, inner):
            return Watched(inner)

        async def set(self, key, value) -> None:
            if before_set is not None:
                before_set(key)
            await self._store.set(key, value)
            if after_set is not None:
                after_set(key, value.to_bytes())

        async def delete(self, key) -> None:
            await self._store.delete(key)
            if after_delete is not None:
                after_delete(key)

    return Watched(store)
