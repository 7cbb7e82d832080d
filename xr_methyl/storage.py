"""Where a store's bytes live: the one module that touches the store's files.

``LocalStorage`` keeps a store in a directory.  Everything the store writes
goes through ``write_atomic`` (a whole object replaced at once, the way an S3
PUT behaves) or through the zarr store it hands out, so an object store can
take its place behind the same methods.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from xr_methyl.errors import StoreLockedError


class LocalStorage:
    """A store's directory on local disk."""

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

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` as a whole: readers see the old bytes or the new, never a mix.

        Write to a temporary file beside it, flush it to disk, rename it over
        the old one, then flush the directory so the rename itself survives a
        power cut.
        """
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def write_json(self, key: str, value: Any) -> None:
        self.write_atomic(key, json.dumps(value, indent=1, ensure_ascii=False).encode())

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

    # -- creating a store in one step --------------------------------------------------
    def staging(self) -> LocalStorage:
        """A fresh sibling directory to build a new store in before :meth:`publish`."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staged = self.root.parent / f".{self.root.name}.creating-{uuid.uuid4().hex[:8]}"
        staged.mkdir()
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
        return True

    # -- one writer at a time -------------------------------------------------------------
    def lock(self, key: str, *, timeout: float) -> WriteLock:
        return WriteLock(self.path(key), timeout=timeout)


class WriteLock:
    """An exclusive lock file, created with O_EXCL so that only one process wins.

    A lock left by a process that died on this host is broken and taken over.
    """

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}

    def __enter__(self) -> WriteLock:
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_is_dead():
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"the store is locked by another writer ({self.path} held by {self._read_holder()}); "
                        f"waited {self.timeout:g} s. Retry later, or delete the lock file if its writer is gone."
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._owner, f)
            return self

    def __exit__(self, *exc: object) -> None:
        if self._read_holder() == self._owner:
            self.path.unlink(missing_ok=True)

    def _read_holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def _holder_is_dead(self) -> bool:
        holder = self._read_holder()
        if not holder or holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, KeyError, TypeError):
            return False
        return False


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
