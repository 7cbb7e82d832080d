"""Where a store's bytes live: the code that touches a store's files or objects.

Two implementations of one :class:`Storage` protocol, picked by
:func:`open_storage` from the store's location:

* ``LocalStorage`` keeps a store in a directory (:mod:`xr_methyl.storage.local`);
* ``S3Storage`` keeps it under an ``s3://bucket/prefix`` (:mod:`xr_methyl.storage.s3`).

Everything a store writes goes through ``write_atomic`` (a whole object
replaced at once, the way an S3 PUT behaves; optionally only if the object
is unchanged since it was read, ``if_match``, or only if it is absent,
``if_absent``) or through the zarr store it hands out.  A store is created in
one step (:meth:`Storage.creating`) and written by one writer at a time
(:meth:`Storage.lock`, a lease: :mod:`xr_methyl.storage.leases`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Protocol


class Storage(Protocol):
    """What a store needs of the place its bytes live (see :class:`LocalStorage`, ``S3Storage``).

    Keys are ``/``-separated paths relative to the store.  Reads of a missing
    key raise ``FileNotFoundError``; a conditional write that loses raises
    :class:`~xr_methyl.errors.StoreConflictError` and writes nothing.
    Implementations pickle as their location (and options), so a dask worker
    can reopen them.
    """

    is_local: bool

    @property
    def uri(self) -> str: ...
    def exists(self, key: str = "") -> bool: ...
    def kind(self) -> Literal["missing", "file", "dir"]: ...
    def read_bytes(self, key: str) -> bytes: ...
    def read_json(self, key: str) -> Any: ...
    def read_tagged(self, key: str) -> tuple[bytes, str]: ...
    def write_atomic(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str: ...
    def write_json(self, key: str, value: Any, *, if_match: str | None = None, if_absent: bool = False) -> str: ...
    def zarr_store(self, key: str, *, read_only: bool): ...
    def list_dir(self, key: str) -> list[str]: ...
    def walk(self, key: str = "") -> Iterator[tuple[str, int]]: ...
    def size(self, key: str = "") -> int: ...
    def age(self, key: str) -> float | None: ...
    def remove(self, key: str) -> None: ...
    def remove_tree(self, key: str) -> None: ...
    def check_writable(self) -> None: ...
    def lock(self, key: str, *, timeout: float, lease: float = ...): ...
    def creating(self, *, manifest_key: str, lock_key: str, timeout: float): ...
    def reclaim_staging(
        self, *, dry_run: bool = False, manifest_key: str = ..., lock_key: str = ..., timeout: float = ...
    ) -> list[tuple[str, int]]: ...


def open_storage(location, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """The storage of a store location: ``s3://bucket/prefix`` or a local path.

    ``storage_options`` configure S3 (endpoint, region, credentials; see
    :class:`xr_methyl.storage.s3.S3Storage`); a local path takes none.  A
    storage object is returned as it is.
    """
    if hasattr(location, "read_tagged") and hasattr(location, "uri"):  # already a storage
        if storage_options:
            raise ValueError("storage_options were given with a storage object; configure the storage instead")
        return location
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if not isinstance(location, str):
        raise TypeError(f"a store location must be a path or an s3:// URI, got {type(location).__name__}")
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    if scheme in ("s3", "s3a"):
        from xr_methyl.storage.s3 import S3Storage

        return S3Storage(location, storage_options)
    if scheme not in ("", "file"):
        raise ValueError(f"store location {location!r}: only local paths, file:// and s3:// URIs are supported")
    if storage_options:
        raise ValueError(f"storage_options are for s3:// stores; {location!r} is a local path")
    from xr_methyl.storage.local import LocalStorage

    return LocalStorage(location.removeprefix("file://") if scheme == "file" else location)


def json_bytes(value: Any) -> bytes:
    """How every JSON object of a store is written."""
    return json.dumps(value, indent=1, ensure_ascii=False).encode()
