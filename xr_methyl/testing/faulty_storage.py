"""A :class:`~xr_methyl.storage.Storage` that fails on purpose: crash points that survive refactors.

Every write of a store goes through its storage: control objects through
``write_atomic`` / ``write_json``, shards and ``zarr.json`` through the zarr
store it hands out.  The steps of an append write distinct keys (shards under
``<array>.zarr/c/``, ``blocks/<i>.json``, the sidecars, ``sample_ids.json``),
so "fail the Nth write of a key matching a pattern" names a crash point by
what the store writes, not by which function writes it::

    faulty = FaultyStorage(LocalStorage(path), "blocks/*", fault=Crash)
    with pytest.raises(Crash):
        Loader(MethylStore.open(faulty)).ingest(ids)      # dies before its first block record
    MethylStore.open(path)                                 # still at the last commit

``fault`` is an exception (class or instance) raised instead of that write, or
a callable ``fault(key)`` run just before it (the write then goes ahead: to
sleep, to let another writer in, to remove the lock).  Patterns are
:func:`fnmatch.fnmatch` patterns over keys relative to the store; ``*`` also
matches ``/``.  Writes of a create go through the storage's staging and are
counted too; the lock's own writes are not.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class FaultyStorage:
    """Wraps a storage; at the ``nth`` write of a key matching ``pattern``, ``fault`` happens (once).

    Everything else is the wrapped storage's.  ``writes`` lists every key
    written through the wrapper, in order (what a test can assert on).
    """

    def __init__(
        self,
        inner,
        pattern: str,
        *,
        nth: int = 1,
        fault: type[BaseException] | BaseException | Callable[[str], Any] = RuntimeError,
    ) -> None:
        if nth < 1:
            raise ValueError(f"nth={nth}: expected 1 or more")
        self.inner = inner
        self.pattern = pattern
        self.nth = nth
        self.fault = fault
        self.writes: list[str] = []
        self.fired = False
        self._matches = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyStorage({self.inner!r}, {self.pattern!r}, nth={self.nth})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __reduce__(self):
        raise TypeError("a FaultyStorage stays in its process: fault injection is not sent to workers")

    # -- the writes ---------------------------------------------------------------------------------------
    def _before_write(self, key: str) -> None:
        with self._lock:
            self.writes.append(key)
            due = not self.fired and fnmatch.fnmatch(key, self.pattern)
            if due:
                self._matches += 1
                due = self._matches == self.nth
                self.fired = due
        if not due:
            return
        fault = self.fault
        if isinstance(fault, BaseException) or (isinstance(fault, type) and issubclass(fault, BaseException)):
            raise fault
        fault(key)

    def write_atomic(self, key: str, data: bytes, **conditions) -> str:
        self._before_write(key)
        return self.inner.write_atomic(key, data, **conditions)

    def write_json(self, key: str, value: Any, **conditions) -> str:
        self._before_write(key)
        return self.inner.write_json(key, value, **conditions)

    def zarr_store(self, key: str, *, read_only: bool):
        store = self.inner.zarr_store(key, read_only=read_only)
        if read_only:
            return store
        from xr_methyl.zarrio.internals import watched_store

        return watched_store(store, before_set=lambda inner_key: self._before_write(f"{key}/{inner_key}"))

    @contextmanager
    def creating(self, **kwargs) -> Iterator[tuple[Any, Callable[[str, bytes], None]]]:
        """The wrapped storage's create, its staging wrapped too (one count for the whole create)."""
        with self.inner.creating(**kwargs) as (staged, publish):
            yield _Staged(self, staged), publish


class _Staged(FaultyStorage):
    """The staging of a create, counted with the storage that created it."""

    def __init__(self, owner: FaultyStorage, inner) -> None:
        self.__dict__.update(owner.__dict__)
        self.inner = inner
        self._owner = owner

    def _before_write(self, key: str) -> None:
        self._owner._before_write(key)
