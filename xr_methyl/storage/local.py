"""A store in a directory on local disk: atomic replaces by rename, a lock file with a lease."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from xr_methyl.errors import StoreConflictError, StoreExistsError
from xr_methyl.storage import json_bytes
from xr_methyl.storage.leases import (
    LEASE_SECONDS,
    OWNER_FILE,
    STAGING_LEASE_SECONDS,
    LeaseLock,
    owner_alive,
    process_identity,
    read_owner,
    write_owner,
)

log = logging.getLogger(__name__)

# The process umask, read once (reading it means setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class LocalStorage:
    """A store's directory on local disk."""

    is_local = True

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str = "") -> bool:
        return self.path(key).exists()

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def kind(self) -> Literal["missing", "file", "dir"]:
        """What the store's location holds: nothing, a file, or a directory."""
        if self.root.is_dir():
            return "dir"
        return "file" if self.root.exists() else "missing"

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes of ``key`` and a tag of this version of it (for ``write_atomic(if_match=)``)."""
        with open(self.path(key), "rb") as f:
            tag = _file_tag(os.fstat(f.fileno()))
            return f.read(), tag

    def write_atomic(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """Replace ``key`` as a whole: readers see the old bytes or the new, never a mix; return the new tag.

        Write to a temporary file beside it, flush it to disk, rename it over
        the old one, then flush the directory so the rename itself survives a
        power cut.  ``if_absent`` creates ``key`` only if it does not exist (a
        hard link, atomic); ``if_match`` replaces it only if its tag is still
        the one given (checked just before the rename: on local disk this is a
        check, not an atomic compare-and-swap, so writers also hold the write
        lock).  Either raises :class:`StoreConflictError` and writes nothing.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600: a shared cache must be readable by others
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, target)  # fails if the target exists
                except FileExistsError:
                    raise StoreConflictError(f"{target} exists already; it was not replaced") from None
                except OSError:  # a filesystem without hard links: check, then rename (writers hold the lock)
                    if target.exists():
                        raise StoreConflictError(f"{target} exists already; it was not replaced") from None
                    os.replace(tmp, target)
                Path(tmp).unlink(missing_ok=True)
            else:
                if if_match is not None:
                    try:
                        current = _file_tag(target.stat())
                    except FileNotFoundError:
                        current = None
                    if current != if_match:
                        raise StoreConflictError(f"{target} changed since it was read; it was not replaced")
                os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return _file_tag(target.stat())

    def write_json(self, key: str, value: Any, *, if_match: str | None = None, if_absent: bool = False) -> str:
        return self.write_atomic(key, json_bytes(value), if_match=if_match, if_absent=if_absent)

    def zarr_store(self, key: str, *, read_only: bool):
        from zarr.storage import LocalStore

        return LocalStore(self.path(key), read_only=read_only)

    def list_dir(self, key: str) -> list[str]:
        path = self.path(key)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def remove_tree(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)

    def size(self, key: str = "") -> int:
        """Bytes on disk under ``key``."""
        path = self.path(key)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

    def age(self, key: str) -> float | None:
        """Seconds since ``key`` was last written (None if it does not exist)."""
        try:
            return time.time() - self.path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    # -- creating a store in one step --------------------------------------------------
    @contextmanager
    def creating(
        self, *, manifest_key: str, lock_key: str, timeout: float
    ) -> Iterator[tuple[LocalStorage, Callable[[str, bytes], None]]]:
        """Build a new store out of sight, then make it appear at once.

        Yields ``(staged, publish)``: write every object of the new store to
        ``staged`` (a hidden sibling directory), then call
        ``publish(manifest_key, manifest_bytes)``, which writes the manifest
        and renames the directory into place (``StoreExistsError`` if
        something appeared here meanwhile).  Whatever happens, nothing
        half-built is left at this location.
        """
        staged = self.staging()
        try:

            def publish(key: str, data: bytes) -> None:
                staged.write_atomic(key, data)
                if not self.publish(staged):
                    raise StoreExistsError(
                        f"{self.uri} appeared while the store was being created; nothing was changed"
                    )

            yield staged, publish
        finally:
            staged.remove_tree("")

    def staging(self) -> LocalStorage:
        """A fresh sibling directory to build a new store in before :meth:`publish`."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staged = self.root.parent / f".{self.root.name}.creating-{uuid.uuid4().hex[:8]}"
        staged.mkdir()
        write_owner(staged)  # so that gc can tell a live create from a leftover
        return LocalStorage(staged)

    def publish(self, staged: LocalStorage) -> bool:
        """Move a fully built store from ``staged`` to this location in one rename.

        Returns False (and leaves this location alone) if something appeared
        here in the meantime.
        """
        try:
            # rename() onto an existing empty directory would succeed on POSIX;
            # refuse any existing entry instead.
            if self.root.exists():
                return False
            os.rename(staged.root, self.root)
        except OSError:
            return False
        _fsync_dir(self.root.parent)
        self.path(OWNER_FILE).unlink(missing_ok=True)
        return True

    # -- one writer at a time -------------------------------------------------------------
    def lock(self, key: str, *, timeout: float, lease: float = LEASE_SECONDS) -> WriteLock:
        """The store's write lock (see :class:`WriteLock`); use it as a context manager."""
        return WriteLock(self.path(key), timeout=timeout, lease=lease)

    # -- writability and housekeeping ------------------------------------------------------
    def check_writable(self) -> None:
        """Raise the ``OSError`` a write here would raise (read-only, permission denied, full disk)."""
        probe = self.path(f".probe-{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(probe, "wb") as f:
                f.write(b"probe")
        finally:
            probe.unlink(missing_ok=True)

    def remove(self, key: str) -> None:
        """Delete one object (a file); missing is fine."""
        path = self.path(key)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    def walk(self, key: str = "") -> Iterator[tuple[str, int]]:
        """Every object under ``key`` as (key relative to the store, size in bytes)."""
        base = self.path(key)
        if not base.is_dir():
            return
        for p in base.rglob("*"):
            try:
                if p.is_file():
                    yield str(p.relative_to(self.root)).replace(os.sep, "/"), p.stat().st_size
            except FileNotFoundError:  # removed while we walked
                continue

    def reclaim_staging(self, *, dry_run: bool = False, **_: Any) -> list[tuple[str, int]]:
        """Remove staging directories of interrupted creates of this store whose creator is gone.

        Returns (path, bytes) of each; with ``dry_run`` only reports them.
        """
        out = []
        for path in self.stale_siblings():
            out.append((str(path), LocalStorage(path).size()))
            if not dry_run:
                shutil.rmtree(path, ignore_errors=True)
        return out

    def stale_siblings(self) -> list[Path]:
        """Staging directories of interrupted creates of this store whose creator is gone."""
        out = []
        for p in self.root.parent.glob(f".{glob.escape(self.root.name)}.creating-*"):
            record = p / OWNER_FILE
            # No lease refresh while creating: a creator on another host gets an hour.
            if p.is_dir() and not owner_alive(
                read_owner(record), record if record.exists() else p, lease=STAGING_LEASE_SECONDS
            ):
                out.append(p)
        return out


class WriteLock(LeaseLock):
    """An exclusive lease on a store, held in one lock file.

    Taking it creates the lock file atomically *with* its content (a filled
    temporary file hard-linked into place, which fails if the lock exists), so
    a lock file is never seen empty.  The content names the holder: host, boot,
    pid and the pid's start time, a random token, and the lease.  While held, a
    background thread refreshes the file's mtime every ``lease / 4`` seconds.

    A waiting writer takes over a lock whose holder is dead: on this host, the
    pid is gone (or a zombie, or reused); on another host, the lease ran out
    without a refresh.  Breaking renames the lock file away first and deletes
    it only if it is still the one judged dead, so two waiters breaking the
    same lock cannot delete a fresh one.  The holder calls :meth:`check`
    before it commits, so a holder that lost its lock never commits.
    """

    def __init__(self, path: Path, *, timeout: float, lease: float = LEASE_SECONDS) -> None:
        super().__init__(str(path), timeout=timeout, lease=lease)
        self.path = Path(path)

    @property
    def record(self) -> dict[str, Any]:
        return {
            **process_identity(),
            "token": self.token,
            "lease_seconds": self.lease,
            "acquired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def held(self) -> bool:
        """Whether the lock file still names this lock."""
        holder = read_owner(self.path)
        return bool(holder) and holder.get("token") == self.token

    # -- internals ------------------------------------------------------------------------
    def _look(self) -> tuple[bool, dict | None, Any] | None:
        seen = self._stat()
        if seen is None:
            return None
        holder = read_owner(self.path)
        return owner_alive(holder, self.path, lease=self.lease), holder, seen

    def _release(self) -> None:
        if self.held():
            self.path.unlink(missing_ok=True)

    def _try_take(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.record).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.path)  # fails if the lock exists: atomic create, content included
            except FileExistsError:
                return False
            except FileNotFoundError:
                # Our temporary vanished before the link (seen once in 30 kill trials with 4 writers;
                # the remover is not yet identified): nothing was created, so simply try again.
                log.debug("lock temporary %s vanished before it was linked; retrying", tmp)
                return False
            except OSError:  # a filesystem without hard links: O_EXCL, then fill it
                return self._try_create_excl(data)
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _try_create_excl(self, data: bytes) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_dev)

    def _break(self, seen: tuple[int, int], holder: dict | None) -> None:
        """Remove the lock file judged dead, and only that one."""
        moved = self.path.with_name(f".{self.path.name}.broken-{self.token[:12]}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return  # someone else broke it first
        try:
            st = moved.stat()
            same = (st.st_ino, st.st_dev) == seen and read_owner(moved) == holder
            if not same:
                # A fresh lock slipped in between our look and our rename: put it back.
                try:
                    os.link(moved, self.path)
                except FileExistsError:
                    pass  # its holder will find out at check() and not commit
            else:
                self._took_over(holder)
        finally:
            moved.unlink(missing_ok=True)

    def _refresh(self) -> bool:
        if not self.held():
            return False
        try:
            os.utime(self.path)
        except OSError:
            return False
        return True


def _file_tag(st: os.stat_result) -> str:
    # A replace makes a new inode; size and nanosecond mtime guard against a reused inode number.
    return f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
