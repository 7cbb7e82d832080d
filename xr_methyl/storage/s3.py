"""A store under an S3 prefix: the only code of xr_methyl that talks to S3 for a store.

``S3Storage("s3://bucket/prefix", storage_options)`` offers the methods of
:class:`xr_methyl.storage.Storage`.  Small control objects (sidecars, the
commit, the lock, the CpG axis files) go through boto3, which gives S3's
conditional requests and error codes directly; the Zarr arrays go through
zarr's ``ObjectStore`` over obstore's ``S3Store`` (async, concurrent range
reads).  Both are configured from the same resolved boto3 session, so they
see the same endpoint, region and credentials.

S3 has no rename, so the protocol relies on conditional requests instead:

* a whole object is replaced by one PUT (atomic per object);
* ``write_atomic(if_absent=True)`` is ``PUT If-None-Match: *`` and
  ``write_atomic(if_match=etag)`` is ``PUT If-Match: <etag>``: a real
  compare-and-swap, answered 412 (or 409 for a concurrent conditional
  write) when another writer got there first;
* the write lock is an object created with ``If-None-Match``, refreshed with
  ``If-Match`` on its ETag, and removed with ``DELETE If-Match`` so that only
  the version judged dead (or our own) can be removed;
* a new store appears when its ``manifest.json`` is written, last, with
  ``If-None-Match`` (see :meth:`S3Storage.creating`).

boto3 and obstore are imported when first used (``import xr_methyl`` stays light).
"""

from __future__ import annotations

import email.utils
import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from xr_methyl.errors import (
    StoreConflictError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
)
from xr_methyl.storage import json_bytes
from xr_methyl.storage.leases import (
    LEASE_SECONDS,
    OWNER_FILE,
    LeaseLock,
    owner_alive_at,
    process_identity,
    read_owner_bytes,
)

log = logging.getLogger(__name__)

#: storage_options understood, with the s3fs spellings accepted as aliases.
OPTION_ALIASES = {
    "endpoint_url": "endpoint_url",
    "region": "region",
    "region_name": "region",
    "profile": "profile",
    "profile_name": "profile",
    "aws_access_key_id": "aws_access_key_id",
    "key": "aws_access_key_id",
    "aws_secret_access_key": "aws_secret_access_key",
    "secret": "aws_secret_access_key",
    "aws_session_token": "aws_session_token",
    "token": "aws_session_token",
    "anon": "anon",
}
#: Probe objects older than this are leftovers of a killed writability check.
PROBE_PREFIX = ".probe-"
#: Largest DeleteObjects request.
_DELETE_BATCH = 1000

# boto3 sessions and clients, and zarr stores over obstore, per process and configuration:
# dask workers reopen storages for every task, and a client costs tens of milliseconds to build.
_CLIENTS: dict[str, Any] = {}
_ZARR_STORES: dict[tuple[str, str, str, bool], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _forget_clients() -> None:  # a forked child must not share its parent's connections (or obstore's runtime)
    global _CLIENTS_LOCK
    _CLIENTS.clear()
    _ZARR_STORES.clear()
    _CLIENTS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_clients)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix"); refuses what is not one."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("s3", "s3a"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = rest.partition("/")
    if not bucket or "?" in uri or "#" in uri:
        raise ValueError(f"{uri!r}: expected s3://<bucket>/<prefix>, without query or fragment")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{uri!r}: '.' and '..' are not allowed in an S3 prefix")
    return bucket, "/".join(parts)


def normalise_options(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``storage_options`` and map the s3fs spellings onto ours (values are never shown)."""
    out: dict[str, Any] = {}
    for name, value in dict(storage_options or {}).items():
        if name == "client_kwargs" and isinstance(value, Mapping):  # s3fs: {"endpoint_url": ..., "region_name": ...}
            for inner, inner_value in value.items():
                if inner not in ("endpoint_url", "region_name"):
                    raise ValueError(
                        f"storage_options client_kwargs {inner!r}: only endpoint_url and region_name are understood"
                    )
                out[OPTION_ALIASES[inner]] = inner_value
            continue
        if name not in OPTION_ALIASES:
            raise ValueError(
                f"storage_options {name!r} is not understood; use {', '.join(sorted(set(OPTION_ALIASES.values())))} "
                "(s3fs spellings key, secret, token, region_name, client_kwargs are accepted too)"
            )
        out[OPTION_ALIASES[name]] = value
    if "anon" in out:
        out["anon"] = bool(out["anon"])
    for name, value in out.items():
        if name != "anon" and value is not None and not isinstance(value, str):
            raise ValueError(f"storage_options {name!r} must be a string, got {type(value).__name__}")
    return {k: v for k, v in out.items() if v is not None}


class S3Storage:
    """A store's objects under ``s3://bucket/prefix``.

    Parameters
    ----------
    uri
        ``s3://bucket/prefix`` (the prefix may be empty: the bucket's root).
    storage_options
        ``endpoint_url`` (S3-compatible services, moto), ``region``,
        ``profile``, ``aws_access_key_id`` / ``aws_secret_access_key`` /
        ``aws_session_token``, ``anon`` (unsigned requests, read-only public
        data); s3fs spellings (``key``, ``secret``, ``token``,
        ``client_kwargs``) are accepted.  Anything not given comes from the
        normal AWS chain (environment, profile, SSO, instance role).  The
        options are never written to the store; they travel with the storage
        when it is pickled to a dask worker.
    """

    is_local = False

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.options = normalise_options(storage_options)

    def __repr__(self) -> str:
        return f"S3Storage({self.uri!r})"  # the options may hold secrets: never shown

    def __getstate__(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3Storage) and (self.bucket, self.prefix, self.options) == (
            other.bucket,
            other.prefix,
            other.options,
        )

    def __hash__(self) -> int:
        return hash((self.bucket, self.prefix))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        key = key.strip("/")
        if not self.prefix:
            return key
        return f"{self.prefix}/{key}" if key else self.prefix

    def _dir(self, key: str) -> str:
        """The listing prefix of everything under ``key`` (with its trailing slash)."""
        full = self._key(key)
        return f"{full}/" if full else ""

    # -- clients ----------------------------------------------------------------------------
    def _config_key(self) -> str:
        return json.dumps(self.options, sort_keys=True)

    @property
    def client(self):
        """The boto3 S3 client of this configuration (shared by the process; boto3 clients are thread-safe)."""
        key = self._config_key()
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = self._make_client()
            return _CLIENTS[key][1]

    @property
    def session(self):
        self.client  # noqa: B018  (builds both)
        return _CLIENTS[self._config_key()][0]

    def _make_client(self):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        o = self.options
        session = boto3.Session(
            profile_name=o.get("profile"),
            aws_access_key_id=o.get("aws_access_key_id"),
            aws_secret_access_key=o.get("aws_secret_access_key"),
            aws_session_token=o.get("aws_session_token"),
            region_name=o.get("region"),
        )
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
            signature_version=UNSIGNED if o.get("anon") else None,
        )
        client = session.client("s3", endpoint_url=o.get("endpoint_url"), config=config)
        return session, client

    def _obstore(self, key: str):
        """An obstore ``S3Store`` rooted at ``key``, configured like the boto3 client."""
        from obstore.store import S3Store

        meta = self.client.meta
        endpoint = meta.endpoint_url
        config: dict[str, Any] = {"region": meta.region_name or "us-east-1"}
        client_options: dict[str, Any] = {}
        if "amazonaws.com" not in endpoint:  # an S3-compatible service (or moto): path-style, as boto3 does
            config["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                client_options["allow_http"] = True
        kwargs: dict[str, Any] = {}
        if self.options.get("anon"):
            config["skip_signature"] = True
        else:
            credentials = self.session.get_credentials()
            if credentials is None:
                raise PermissionError(
                    errno.EACCES,
                    f"no AWS credentials found for {self.uri}: configure the AWS "
                    "chain (environment, profile, instance role) or pass storage_options",
                )
            kwargs["credential_provider"] = _CredentialProvider(credentials)
        return S3Store(
            self.bucket, prefix=self._key(key) or None, config=config, client_options=client_options, **kwargs
        )

    def zarr_store(self, key: str, *, read_only: bool):
        """zarr's ``ObjectStore`` over obstore for the array under ``key``."""
        from zarr.storage import ObjectStore

        cache_key = (self._config_key(), self.bucket, self._key(key), read_only)
        store = _ZARR_STORES.get(cache_key)
        if store is None:
            store = _ZARR_STORES[cache_key] = ObjectStore(self._obstore(key), read_only=read_only)
        return store

    # -- requests ---------------------------------------------------------------------------
    def _call(self, operation: str, key: str | None, **kwargs):
        """One boto3 call, its failures turned into the builtin errors the store expects."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as err:
            raise self._error(err, operation, key) from err
        except NoCredentialsError as err:
            raise PermissionError(
                errno.EACCES,
                f"no AWS credentials found for {self.uri}: configure the AWS chain "
                "(environment, profile, SSO, instance role) or pass storage_options",
            ) from err
        except BotoCoreError as err:
            raise ConnectionError(errno.EIO, f"cannot reach S3 for {self.uri}: {err}") from err

    def _error(self, err, operation: str, key: str | None) -> Exception:
        error = err.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = f"{self.uri}/{key}" if key else self.uri
        if code == "NoSuchBucket":
            return StoreNotFoundError(
                f"the bucket {self.bucket!r} does not exist (endpoint "
                f"{self.client.meta.endpoint_url}); create it first or check the store URI "
                f"{self.uri}"
            )
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return FileNotFoundError(errno.ENOENT, f"no such object: {where}")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return StoreConflictError(
                f"{where} changed (or appeared) since it was read; it was not written ({code or status})"
            )
        if (
            code
            in (
                "AccessDenied",
                "AllAccessDisabled",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "403",
            )
            or status == 403
        ):
            return PermissionError(
                errno.EACCES,
                f"access denied to {where} ({operation}: {code or status}); check "
                "the credentials and the bucket policy",
            )
        message = error.get("Message") or str(err)
        return OSError(errno.EIO, f"S3 {operation} of {where} failed: {code or status}: {message}")

    # -- reading ----------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        return self._call("get_object", key, Key=self._key(key))["Body"].read()

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The bytes of ``key`` and its ETag (for ``write_atomic(if_match=)``)."""
        response = self._call("get_object", key, Key=self._key(key))
        return response["Body"].read(), response["ETag"]

    def read_with_age(self, key: str) -> tuple[bytes, str, float]:
        """Bytes, ETag and age in seconds by the server's own clock (Date - Last-Modified)."""
        response = self._call("get_object", key, Key=self._key(key))
        return response["Body"].read(), response["ETag"], _server_age(response)

    def download(self, key: str, path) -> str:
        """Stream ``key`` into the local file ``path``; return the sha256 of what was written."""
        import hashlib

        response = self._call("get_object", key, Key=self._key(key))
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for chunk in response["Body"].iter_chunks(8 << 20):
                digest.update(chunk)
                f.write(chunk)
        return digest.hexdigest()

    def head(self, key: str) -> dict | None:
        try:
            return self._call("head_object", key, Key=self._key(key))
        except FileNotFoundError:
            return None

    def exists(self, key: str = "") -> bool:
        if key:
            return self.head(key) is not None
        return self.kind() != "missing"

    def kind(self) -> Literal["missing", "file", "dir"]:
        """What the store's prefix holds: nothing, one object (a file), or objects under it (a directory).

        Raises ``StoreNotFoundError`` when the bucket does not exist.
        """
        listed = self._call("list_objects_v2", None, Prefix=self._dir(""), MaxKeys=1)
        if listed.get("KeyCount", 0):
            return "dir"
        if self.prefix and self.head("") is not None:
            return "file"
        return "missing"

    def age(self, key: str) -> float | None:
        head = self.head(key)
        return None if head is None else _server_age(head)

    def list_dir(self, key: str) -> list[str]:
        """Names directly under ``key`` (objects and common prefixes)."""
        base = self._dir(key)
        names: set[str] = set()
        for page in self._pages(Prefix=base, Delimiter="/"):
            names.update(p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", []))
            names.update(o["Key"][len(base) :] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def walk(self, key: str = "") -> Iterator[tuple[str, int]]:
        """Every object under ``key`` as (key relative to the store, size in bytes)."""
        base, root = self._dir(key), self._dir("")
        for page in self._pages(Prefix=base):
            for o in page.get("Contents", []):
                yield o["Key"][len(root) :], int(o["Size"])

    def objects(self, key: str = "") -> dict[str, dict[str, Any]]:
        """Every object under ``key``: relative key -> ETag, LastModified and Size (for tests and tools)."""
        base, root = self._dir(key), self._dir("")
        return {
            o["Key"][len(root) :]: {"ETag": o["ETag"], "LastModified": o["LastModified"], "Size": o["Size"]}
            for page in self._pages(Prefix=base)
            for o in page.get("Contents", [])
        }

    def _pages(self, **kwargs) -> Iterator[dict]:
        token = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list_objects_v2", None, **kwargs, **extra)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def size(self, key: str = "") -> int:
        """Bytes stored under ``key`` (the object ``key`` itself, or everything under it)."""
        if key:
            head = self.head(key)
            if head is not None:
                return int(head["ContentLength"])
        return sum(n for _, n in self.walk(key))

    # -- writing ----------------------------------------------------------------------------
    def write_atomic(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> str:
        """PUT ``key`` whole (atomic per object); return its new ETag.

        ``if_absent`` sends ``If-None-Match: *``, ``if_match`` sends
        ``If-Match: <etag>``: S3 then writes only if the condition holds, and
        :class:`StoreConflictError` says it did not.
        """
        conditions: dict[str, str] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        try:
            response = self._call("put_object", key, Key=self._key(key), Body=data, **conditions)
        except FileNotFoundError:
            if if_match is None:
                raise
            # If-Match on an object that is gone: S3 answers 404 NoSuchKey; for us it is a lost race.
            raise StoreConflictError(f"{self.uri}/{key} was removed since it was read; it was not written") from None
        return response["ETag"]

    def write_json(self, key: str, value: Any, *, if_match: str | None = None, if_absent: bool = False) -> str:
        return self.write_atomic(key, json_bytes(value), if_match=if_match, if_absent=if_absent)

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete ``key`` only if its ETag is still ``etag`` (``DELETE If-Match``); False if it was not.

        S3 (since 2025-09) and moto honour ``If-Match`` on DeleteObject.  A
        service that ignores the header would delete whatever is there; to
        narrow that window the ETag is also re-read just before the request.
        """
        head = self.head(key)
        if head is None or head["ETag"] != etag:
            return False
        try:
            self._call("delete_object", key, Key=self._key(key), IfMatch=etag)
        except (StoreConflictError, FileNotFoundError):
            return False
        return True

    def remove(self, key: str) -> None:
        """Delete the object ``key`` and everything under ``key/``; missing is fine."""
        full = self._key(key)
        keys = [full] if self.head(key) is not None else []
        keys += [o["Key"] for page in self._pages(Prefix=self._dir(key)) for o in page.get("Contents", [])]
        self._delete_keys(keys)

    def remove_tree(self, key: str) -> None:
        self.remove(key)

    def remove_keys(self, keys: list[str]) -> None:
        """Delete these objects (keys relative to the store)."""
        self._delete_keys([self._key(k) for k in keys])

    def _delete_keys(self, full_keys: list[str]) -> None:
        for i in range(0, len(full_keys), _DELETE_BATCH):
            batch = full_keys[i : i + _DELETE_BATCH]
            response = self._call(
                "delete_objects", None, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(
                    errno.EIO,
                    f"could not delete {len(errors)} object(s) under {self.uri}, e.g. "
                    f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}",
                )

    def check_writable(self) -> None:
        """Raise the ``OSError`` a write here would raise: PUT and DELETE a probe object."""
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}.tmp"
        self.write_atomic(probe, b"probe")
        self._call("delete_object", probe, Key=self._key(probe))

    # -- one writer at a time ---------------------------------------------------------------
    def lock(self, key: str, *, timeout: float, lease: float = LEASE_SECONDS) -> S3WriteLock:
        """The store's write lock (see :class:`S3WriteLock`); use it as a context manager."""
        return S3WriteLock(self, key, timeout=timeout, lease=lease)

    # -- creating a store in one step -------------------------------------------------------
    @contextmanager
    def creating(
        self, *, manifest_key: str, lock_key: str, timeout: float
    ) -> Iterator[tuple[S3Storage, Callable[[str, bytes], None]]]:
        """Create a store in place under the write lock; it exists once its manifest is written.

        Yields ``(self, publish)``.  Under the write lock of the prefix: a
        prefix holding a manifest is refused (``StoreExistsError``), and so
        is one holding objects without the create marker ``.owner.json``
        (foreign data is never touched); objects with the marker are what a
        dead creator left (its lock was taken over) and are removed.  Then
        the marker is written, the caller writes every object of the store,
        and ``publish`` checks that the lock is still ours and writes the
        manifest with ``If-None-Match`` (the create's commit), then removes
        the marker.  On any failure before that, everything written under the
        prefix is removed: nothing half-built is ever visible, since a store
        without a manifest does not open.
        """
        try:
            lock = self.lock(lock_key, timeout=timeout).__enter__()
        except StoreLockedError as err:
            raise StoreExistsError(
                f"another process holds the write lock of {self.uri} (creating or writing a store there): {err}"
            ) from None
        published = False
        try:
            leftovers = [k for k, _ in self.walk() if k != lock_key]
            if manifest_key in leftovers:
                raise StoreExistsError(
                    f"{self.uri} already holds a methylzarr store; MethylStore.create never "
                    "overwrites. Open it with MethylStore.open, or choose a new prefix."
                )
            if leftovers and OWNER_FILE not in leftovers:
                raise StoreExistsError(
                    f"{self.uri} already holds {len(leftovers)} object(s) (e.g. {leftovers[0]}) "
                    "that are not a methylzarr store; MethylStore.create never overwrites. "
                    "Choose an empty prefix."
                )
            if leftovers:
                log.warning("%s: removing %d object(s) of an interrupted create", self.uri, len(leftovers))
                self.remove_keys(leftovers)
            self.write_json(OWNER_FILE, process_identity())

            def publish(key: str, data: bytes) -> None:
                nonlocal published
                lock.check()
                try:
                    self.write_atomic(key, data, if_absent=True)
                except StoreConflictError:
                    raise StoreExistsError(
                        f"{self.uri} got a manifest while the store was being created; nothing of this create is kept"
                    ) from None
                published = True
                self.remove_keys([OWNER_FILE])

            yield self, publish
        finally:
            try:
                if not published and lock.held():
                    self.remove_keys([k for k, _ in self.walk() if k != lock_key])
            except Exception as err:  # the next create or gc clears it (the marker says what it is)
                log.warning("could not remove the interrupted create under %s: %s", self.uri, err)
            finally:
                lock.__exit__(None, None, None)

    def reclaim_staging(
        self,
        *,
        dry_run: bool = False,
        manifest_key: str = "manifest.json",
        lock_key: str = "write.lock",
        timeout: float = 60.0,
    ) -> list[tuple[str, int]]:
        """Remove what an interrupted create left under this prefix (no manifest, the create marker).

        Taken under the write lock, so a running create is never disturbed.
        Returns ``[(description, bytes)]``; with ``dry_run`` only reports.
        """
        if self.head(manifest_key) is not None or self.head(OWNER_FILE) is None:
            return []
        with self.lock(lock_key, timeout=timeout):
            if self.head(manifest_key) is not None or self.head(OWNER_FILE) is None:
                return []
            leftovers = [(k, n) for k, n in self.walk() if k != lock_key]
            if not dry_run:
                self.remove_keys([k for k, _ in leftovers])
        total = sum(n for _, n in leftovers)
        return [(f"{self.uri} (interrupted create: {len(leftovers)} object(s))", total)] if leftovers else []


class S3WriteLock(LeaseLock):
    """An exclusive lease on a store, held in one S3 object.

    Taking it is ``PUT If-None-Match: *`` of a record naming the holder (host,
    boot, pid and its start time, a random token, the lease), so the lock
    object always has its content.  While held, a background thread rewrites
    it every ``lease / 4`` seconds with ``If-Match`` on its ETag (each
    version differs, so each has its own ETag); a heartbeat that finds the
    ETag changed means the lock was taken over.

    A waiting writer takes over a lock whose holder is dead: on this host,
    the pid is gone (or a zombie, or reused); elsewhere, the record is older
    than its lease by the server's clock (``Date`` minus ``Last-Modified`` of
    the same response, so the clocks of the hosts never matter).  It deletes
    the lock with ``DELETE If-Match`` on the ETag it judged, so a lock
    refreshed or re-taken meanwhile survives.  Release is the same
    conditional delete of our own ETag.  :meth:`check` (before a commit)
    re-reads the lock.
    """

    def __init__(self, storage: S3Storage, key: str, *, timeout: float, lease: float = LEASE_SECONDS) -> None:
        super().__init__(f"{storage.uri}/{key}", timeout=timeout, lease=lease)
        self.storage = storage
        self.key = key
        self._etag: str | None = None
        self._beats = 0
        self._acquired_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _record(self) -> bytes:
        return json.dumps(
            {
                **process_identity(),
                "token": self.token,
                "lease_seconds": self.lease,
                "acquired_at": self._acquired_at,
                "beat": self._beats,
            }
        ).encode()

    def held(self) -> bool:
        """Whether the lock object still names this lock."""
        try:
            holder = read_owner_bytes(self.storage.read_bytes(self.key))
        except FileNotFoundError:
            return False
        return bool(holder) and holder.get("token") == self.token

    def _try_take(self) -> bool:
        self._acquired_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self._etag = self.storage.write_atomic(self.key, self._record(), if_absent=True)
        except StoreConflictError:
            return False
        return True

    def _look(self) -> tuple[bool, dict | None, Any] | None:
        try:
            data, etag, age = self.storage.read_with_age(self.key)
        except FileNotFoundError:
            return None
        holder = read_owner_bytes(data)
        return owner_alive_at(holder, age, lease=self.lease), holder, etag

    def _break(self, seen: Any, holder: dict | None) -> None:
        if self.storage.delete_if(self.key, seen):  # only the version judged dead
            self._took_over(holder)

    def _refresh(self) -> bool:
        self._beats += 1
        try:
            self._etag = self.storage.write_atomic(self.key, self._record(), if_match=self._etag)
        except StoreConflictError:
            log.warning("the write lock %s was taken over; this writer will not commit", self.where)
            self._etag = None
            return False
        except OSError as err:  # a network blip: try again at the next beat, the lease has room for it
            log.warning("could not refresh the write lock %s: %s", self.where, err)
        return True

    def _release(self) -> None:
        if self._etag is None:
            return
        try:
            self.storage.delete_if(self.key, self._etag)  # only if it is still ours
        except OSError as err:  # the lease runs out on its own
            log.warning("could not release the write lock %s: %s", self.where, err)
        self._etag = None


class _CredentialProvider:
    """Credentials for obstore from a botocore credentials object (refreshed as botocore refreshes them)."""

    def __init__(self, credentials) -> None:
        self.credentials = credentials

    def __call__(self) -> dict[str, Any]:
        from datetime import UTC, datetime, timedelta

        frozen = self.credentials.get_frozen_credentials()
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.now(UTC) + timedelta(minutes=5),
        }


def _server_age(response: dict) -> float:
    """Seconds since the object was last modified, by the server's clock alone."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    modified = response["LastModified"]
    if date:
        now = email.utils.parsedate_to_datetime(date).timestamp()
    else:  # no Date header (unusual): fall back to our own clock
        now = time.time()
    return max(0.0, now - modified.timestamp())
