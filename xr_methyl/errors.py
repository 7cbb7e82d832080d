"""One error hierarchy for xr_methyl.

Every class also subclasses the matching builtin, so callers can catch either
``xr_methyl.MethylError`` or the builtin they already expect (``KeyError`` for
unknown samples, ``ValueError`` for bad data, ``FileExistsError`` ...).
"""

from __future__ import annotations

from collections.abc import Iterable


class MethylError(Exception):
    """Base class of every error raised on purpose by xr_methyl."""


class StoreError(MethylError):
    """A store is missing, corrupt, or does not match what was asked for."""


class StoreExistsError(StoreError, FileExistsError):
    """``MethylStore.create`` was pointed at something that already exists."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No methylzarr store at the given path.

    ``location`` is set when nothing at all is there (a store can be created
    at it); None when something else is.
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location

    def __str__(self) -> str:  # FileNotFoundError would prefix "[Errno ...]" only sometimes
        return str(self.args[0])


class CorruptStoreError(StoreError, ValueError):
    """A sidecar or array of a store disagrees with the rest of the store."""


class StoreLockedError(StoreError, TimeoutError):
    """Another writer held the store's write lock for longer than we waited."""


class StoreConflictError(StoreLockedError):
    """A conditional write lost: the object changed (or appeared) since this writer read it.

    On S3 this is the answer 412 Precondition Failed (or 409 ConditionalRequestConflict) to a
    PUT with ``If-Match``/``If-None-Match``; nothing was written.
    """


class StoreWriteError(StoreError, OSError):
    """Writing to a store failed (full disk, read-only, permission denied, ...).

    Raised with the store at its last commit; ``errno`` is the one of the
    ``OSError`` underneath (``errno.ENOSPC``, ``errno.EACCES``, ...).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:  # OSError would prefix "[Errno ...]" only sometimes
        return str(self.args[0])


class UnknownSamplesError(MethylError, KeyError):
    """Sample ids that the warehouse does not know."""

    def __init__(self, missing: Iterable[str], *, where: str = "the warehouse") -> None:
        self.missing = list(missing)
        shown = ", ".join(repr(s) for s in self.missing[:10])
        more = f" (and {len(self.missing) - 10} more)" if len(self.missing) > 10 else ""
        self.message = (
            f"{len(self.missing)} sample id(s) not found in {where}: {shown}{more}. "
            "Check the ids against the sample_batch_map table; nothing was written."
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.message


class WarehouseError(MethylError, RuntimeError):
    """The warehouse is unreachable, misconfigured or lacks a table or column."""


class DataError(MethylError, ValueError):
    """Warehouse rows that cannot be stored faithfully (out of range, duplicated, ...)."""


class UnknownCpgError(DataError):
    """Warehouse rows whose cpg_id is not on the store's CpG axis (when asked to be strict)."""


class MissingDependencyError(MethylError, ImportError):
    """An optional part of xr_methyl needs packages that are not installed; the message names the extra."""


class UnknownCpgWarning(UserWarning):
    """Warehouse rows whose cpg_id is not on the store's CpG axis were dropped."""
