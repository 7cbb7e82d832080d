"""Who holds a lock or a staging directory, and whether it is still alive: what every lease shares.

A holder is named by :func:`process_identity` (host, boot, pid and the pid's
start time); :func:`owner_alive` tells a live holder from a dead one (same
host: the pid decides; another host: the lease).  :class:`LeaseLock` is the
waiting, takeover, heartbeat and loss check that the local write lock
(:class:`~xr_methyl.storage.local.WriteLock`) and the S3 one
(:class:`~xr_methyl.storage.s3.S3WriteLock`) share; owner files mark the
staging directories of creates and exports (:func:`write_owner`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from xr_methyl.errors import StoreLockedError

log = logging.getLogger(__name__)

#: Lease of a lock: a holder on another host that has not refreshed its lock
#: file for this long is presumed dead.  The holder refreshes it every lease/4.
LEASE_SECONDS = 120.0
#: A lock file that cannot be parsed (created, never filled) is stale after this long.
UNREADABLE_GRACE_SECONDS = 10.0
#: What a staging directory keeps of its creator, to tell a live one from a leftover.
OWNER_FILE = ".owner.json"
STAGING_LEASE_SECONDS = 3600.0


def process_identity() -> dict[str, Any]:
    """Who this process is, in a form another process can check for liveness."""
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": os.getpid(),
        "pid_start": _pid_start(os.getpid()),
    }


def owner_alive(owner: dict | None, path: Path, *, lease: float = LEASE_SECONDS) -> bool:
    """Whether the process described by ``owner`` (see :func:`process_identity`) may still run.

    On this host (same boot) the pid decides: gone, a zombie, or reused by a
    process that started at another time means dead.  A holder on another host
    is alive while ``path`` was refreshed (its mtime) within ``lease`` seconds;
    an unreadable record, within :data:`UNREADABLE_GRACE_SECONDS`.
    """
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return owner_alive_at(owner, age, lease=lease)


def owner_alive_at(owner: dict | None, age: float, *, lease: float = LEASE_SECONDS) -> bool:
    """:func:`owner_alive` for a record last refreshed ``age`` seconds ago."""
    if not isinstance(owner, dict) or "host" not in owner or "pid" not in owner:
        return age < UNREADABLE_GRACE_SECONDS
    if owner.get("host") != socket.gethostname():
        return age < float(owner.get("lease_seconds") or lease)
    if owner.get("boot_id") and _boot_id() and owner["boot_id"] != _boot_id():
        return False  # this host rebooted since: every process of then is gone
    try:
        pid = int(owner["pid"])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (ValueError, TypeError, OverflowError):
        return age < UNREADABLE_GRACE_SECONDS
    if _pid_state(pid) == "Z":
        return False
    started = _pid_start(pid)
    return not (owner.get("pid_start") and started and owner["pid_start"] != started)


def write_owner(directory: Path) -> None:
    """Mark ``directory`` as being built by this process (read back by whoever reclaims leftovers)."""
    (directory / OWNER_FILE).write_text(json.dumps(process_identity()))


def read_owner(path: Path) -> dict | None:
    try:
        return read_owner_bytes(path.read_bytes())
    except OSError:
        return None


def read_owner_bytes(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def _pid_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22: start time in ticks


def _pid_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


class LeaseLock:
    """What every write lock shares: waiting for it, taking over a dead holder's, the heartbeat, the loss check.

    Subclasses say how to take the lock (:meth:`_try_take`), look at the
    current holder (:meth:`_look`), remove a dead holder's lock and only that
    one (:meth:`_break`), refresh the lease (:meth:`_refresh`), release it
    (:meth:`_release`) and tell whether it is still ours (:meth:`held`).
    """

    where: str

    def __init__(self, where: str, *, timeout: float, lease: float = LEASE_SECONDS) -> None:
        self.where = where
        self.timeout = timeout
        self.lease = lease
        self.token = uuid.uuid4().hex
        self.broken: list[dict | None] = []  # holders whose dead locks we took over
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> Any:
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            if self._try_take():
                self._stop.clear()
                self._beat = threading.Thread(target=self._heartbeat, name="xr_methyl-lock-heartbeat", daemon=True)
                self._beat.start()
                return self
            look = self._look()
            if look is None:
                continue  # released meanwhile: try again at once
            alive, holder, seen = look
            if not alive:
                self._break(seen, holder)
                continue
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"the store is locked by another writer ({self.where} held by {_describe(holder)}); "
                    f"waited {self.timeout:g} s. Retry later; a lock whose writer died is taken over "
                    "automatically (same host: at once; other hosts: after its lease runs out)."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._release()

    def check(self) -> None:
        """Raise :class:`StoreLockedError` if this lock was lost (taken over as dead)."""
        if not self.held():
            raise StoreLockedError(
                f"lost the write lock {self.where} (another writer took it over, judging this one dead); "
                "nothing was committed by this writer"
            )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            if not self._refresh():
                return

    def _took_over(self, holder: dict | None) -> None:
        log.warning("took over the write lock %s from a dead writer (%s)", self.where, _describe(holder))
        self.broken.append(holder)

    # -- what each kind of lock does -------------------------------------------------------------
    def held(self) -> bool:
        raise NotImplementedError

    def _try_take(self) -> bool:
        raise NotImplementedError

    def _look(self) -> tuple[bool, dict | None, Any] | None:
        """(holder alive?, its record, what identifies this lock version), or None if there is no lock."""
        raise NotImplementedError

    def _break(self, seen: Any, holder: dict | None) -> None:
        raise NotImplementedError

    def _refresh(self) -> bool:
        """Refresh the lease; False stops the heartbeat (the lock is lost)."""
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


def _describe(holder: dict | None) -> str:
    if not holder:
        return "an unreadable lock record"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('acquired_at', '?')}"
