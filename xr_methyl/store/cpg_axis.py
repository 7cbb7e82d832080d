"""The CpG axis of a store: ids (and their genomic loci), fixed at creation.

Ids are kept as a fixed-width byte array (``cpg_ids.npy``), which is compact,
loads without pickle and hashes in one pass.  Beside it, ``cpg_index/`` holds
the loci (chromosome code and position) and two look-up tables written once at
creation: the ids sorted (with the column of each), for label look-ups by
binary search, and the loci as sorted int64 keys ``chrom_code << 40 | pos``,
for region look-ups.  Every one is a plain ``.npy`` file, memory-mapped when a
store is opened, so opening costs no time or memory in the axis length and a
look-up touches only the pages its binary search visits.

Every file of the axis is checked against the sha256 the manifest records
before a store opens (:func:`open_checked`): hashing is what it costs (about a
second per GB, 1.4 GB at 28 M CpGs), so files found right are remembered by
their identity (device, inode, size, mtime, ctime) in a per-user folder and are
read again only once they change or are copied (:func:`check_files`).

A store on S3 cannot be memory-mapped: :func:`open_remote` downloads its axis
files once into a local cache (``$XR_METHYL_CACHE``, default
``~/.cache/xr_methyl``), in a folder named by the sha256 of the files that the
manifest records, checks every file against its hash, and memory-maps them
from there; later opens check that local copy like a local store's files and
download it again if it was damaged.  Any process (a dask worker too) that
lacks the folder downloads it; one whose cache cannot be written reads the
files into memory instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.errors import CorruptStoreError, DataError, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CpgAxis:
    """CpG ids in store column order, with optional loci.

    ``ids`` is a 1-D ``S`` (ASCII bytes) array; ``chrom_names[chrom_codes[i]]``
    and ``pos[i]`` give the locus of column ``i`` when ``has_loci``.
    """

    ids: np.ndarray
    chrom_names: np.ndarray | None = None
    chrom_codes: np.ndarray | None = None
    pos: np.ndarray | None = None
    #: Directory the arrays are memory-mapped from (None: in memory); pickles reopen it.
    source: str | None = None
    #: Where a remote store's axis comes from (:class:`RemoteAxis`); pickles reopen it through the cache.
    remote: Any = None
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __reduce__(self):
        if self.remote is not None:  # a worker opens it through its own cache, never the client's path
            return (open_remote, (self.remote.storage, dict(self.remote.files)))
        if self.source is not None:  # reopen the files instead of copying the arrays
            return (CpgAxis.open, (self.source,))
        return (CpgAxis, (self.ids, self.chrom_names, self.chrom_codes, self.pos))

    @property
    def has_loci(self) -> bool:
        return self.pos is not None

    @property
    def sha256(self) -> str:
        """Hash of the ids in order; recorded in the manifest and checked at every open."""
        digest = hashlib.sha256(self.ids.dtype.str.encode() + b"\0")
        digest.update(np.ascontiguousarray(self.ids).data)
        return digest.hexdigest()

    def labels(self) -> np.ndarray:
        """The ids as a unicode array, for xarray coordinates."""
        return self.ids.astype(f"U{self.ids.dtype.itemsize}")

    def chrom(self) -> np.ndarray:
        assert self.chrom_names is not None and self.chrom_codes is not None
        return self.chrom_names[self.chrom_codes]

    # -- look-ups ------------------------------------------------------------------------
    def _table(self, name: str) -> np.ndarray | None:
        """A look-up table: memory-mapped from ``cpg_index/`` or, for in-memory axes, built once."""
        if name not in self._tables:
            if name in ("sorted_ids", "sorted_order"):
                order = sort_order(self.ids)
                self._tables.update(sorted_ids=self.ids[order], sorted_order=order)
            else:
                keys = locus_keys(self.chrom_codes, self.pos)
                order = None if bool(np.all(keys[1:] >= keys[:-1])) else np.argsort(keys, kind="stable")
                self._tables.update(locus_keys=keys if order is None else keys[order], locus_order=order)
        return self._tables[name]

    def columns_of(self, labels) -> tuple[np.ndarray, np.ndarray]:
        """Columns of ``labels`` (strings) by binary search; ``-1`` and a mask for unknown ones.

        Returns ``(columns, found)``: int64 columns in the order of ``labels``
        and a boolean mask of the labels that are on the axis.
        """
        sorted_ids = self._table("sorted_ids")
        keys = np.asarray(labels)
        ascii_ok = np.ones(keys.shape, dtype=bool)
        if keys.dtype.kind == "U" or keys.dtype == object:
            keys = keys.astype(str)
            # Non-ASCII labels cannot be ids; encode them as a stand-in and mark them unknown.
            ascii_ok = np.vectorize(str.isascii, otypes=[bool])(keys) if keys.size else ascii_ok
            keys = np.char.encode(keys, "ascii", "replace") if keys.size else keys.astype("S1")
        where = np.searchsorted(sorted_ids, keys)
        inside = (where < len(sorted_ids)) & ascii_ok
        found = np.zeros(keys.shape, dtype=bool)
        found[inside] = sorted_ids[where[inside]] == keys[inside]
        columns = np.full(keys.shape, -1, dtype=np.int64)
        columns[found] = self._table("sorted_order")[where[found]]
        return columns, found

    def ranks(self, columns: np.ndarray) -> np.ndarray:
        """Each column's position among the ids in sorted order: ids compare as their ranks do."""
        columns = np.asarray(columns, dtype=np.int64)
        if len(columns) * 8 < len(self):  # a few (measured: the two ways cost the same near n/8)
            return np.searchsorted(self._table("sorted_ids"), self.ids[columns])  # binary search for their ids
        rank = np.empty(len(self), dtype=np.int64)  # many: one pass over the sorted order
        rank[self._table("sorted_order")] = np.arange(len(self))
        return rank[columns]

    def region(self, chrom: str, start: int, end: int) -> slice | np.ndarray:
        """Columns of CpGs on ``chrom`` with ``start <= pos < end``, in axis order.

        A slice when the axis is in locus order (the usual case), else an array.
        """
        if not self.has_loci:
            raise ValueError("this store's CpG axis has no loci (chrom, pos); select CpGs by id instead")
        names = [str(c) for c in self.chrom_names]
        if chrom not in names:
            raise KeyError(f"no CpG on chromosome {chrom!r}; the axis has {', '.join(names[:30])}")
        code = names.index(chrom)
        keys = self._table("locus_keys")
        lo, hi = np.searchsorted(
            keys, [(code << LOCUS_SHIFT) + max(int(start), 0), (code << LOCUS_SHIFT) + max(int(end), 0)]
        )
        order = self._table("locus_order")
        if order is None:
            return slice(int(lo), int(hi))
        return np.sort(order[lo:hi])

    def to_arrow(self) -> pa.Array:
        """The ids as an Arrow string array (for joins)."""
        ids = pa.array(self.ids, type=pa.binary())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        return ids.cast(pa.string())

    # -- building ------------------------------------------------------------------------
    @classmethod
    def from_ids(cls, ids) -> CpgAxis:
        """An axis without loci from a sequence of id strings."""
        arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), type=pa.string())
        packed, order = _to_fixed_bytes(arr)
        return cls(ids=packed)._with_order(order)

    @classmethod
    def from_table(cls, table: pa.Table) -> CpgAxis:
        """An axis with loci from a table of ``cpg_id``, ``chrom``, ``pos`` in axis order."""
        for column in ("cpg_id", "chrom", "pos"):
            if column not in table.column_names:
                raise DataError(f"CpG table lacks column {column!r}; expected cpg_id, chrom, pos")
        chrom = table.column("chrom").combine_chunks()
        if chrom.null_count:
            raise DataError(f"{chrom.null_count} CpG(s) have no chromosome; every CpG needs chrom and pos")
        encoded = pc.dictionary_encode(chrom.cast(pa.string()))
        names = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
        pos = table.column("pos")
        if pos.null_count:
            raise DataError(f"{pos.null_count} CpG(s) have no position; every CpG needs chrom and pos")
        packed, order = _to_fixed_bytes(table.column("cpg_id"))
        axis = cls(ids=packed, chrom_names=names, chrom_codes=codes, pos=pos.to_numpy().astype(np.int64))
        locus_keys(axis.chrom_codes, axis.pos)  # refuses positions a locus key cannot hold
        return axis._with_order(order)

    def _with_order(self, order: np.ndarray) -> CpgAxis:
        self._tables.update(sorted_ids=self.ids[order], sorted_order=order)
        return self

    # -- files ---------------------------------------------------------------------------
    def ids_bytes(self) -> bytes:
        return _npy_bytes(self.ids)

    def index_files(self) -> dict[str, bytes]:
        """The ``cpg_index/`` files of format 2: loci and the look-up tables."""
        files = {"sorted_ids.npy": self._table("sorted_ids"), "sorted_order.npy": self._table("sorted_order")}
        if self.has_loci:
            files.update(
                {
                    "chrom.npy": self.chrom_codes,
                    "chrom_names.npy": self.chrom_names,
                    "pos.npy": self.pos,
                    "locus_keys.npy": self._table("locus_keys"),
                }
            )
            if self._table("locus_order") is not None:
                files["locus_order.npy"] = self._table("locus_order")
        return {name: _npy_bytes(array) for name, array in files.items()}

    def axis_files(self) -> dict[str, bytes]:
        """Every file of the axis of a format 2 store, by its key in the store."""
        return {
            "cpg_ids.npy": self.ids_bytes(),
            **{f"{INDEX_DIR}/{name}": data for name, data in self.index_files().items()},
        }

    @classmethod
    def open(cls, directory: str | os.PathLike, *, remote: RemoteAxis | None = None) -> CpgAxis:
        """Memory-map the axis of a format 2 store (``cpg_ids.npy`` and ``cpg_index/``)."""
        root = os.fspath(directory)

        def load(key: str, mmap: bool = True):
            path = os.path.join(root, *key.split("/"))
            if not os.path.exists(path):
                return None
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

        return cls._load(load, where=root, source=root, remote=remote)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], *, remote: RemoteAxis | None = None) -> CpgAxis:
        """The axis of a format 2 store from the bytes of its files (keys as in :meth:`axis_files`), in memory."""

        def load(key: str, mmap: bool = True):
            return np.load(io.BytesIO(files[key]), allow_pickle=False) if key in files else None

        return cls._load(load, where="the store", source=None, remote=remote)

    @classmethod
    def _load(
        cls, load: Callable[..., np.ndarray | None], *, where: str, source: str | None, remote: RemoteAxis | None
    ) -> CpgAxis:
        def read(key: str, mmap: bool = True, *, required: bool = True) -> np.ndarray | None:
            try:
                array = load(key, mmap)
            except (ValueError, OSError, EOFError) as err:  # truncated, garbage, not a .npy file
                raise CorruptStoreError(
                    f"{where}/{key} cannot be read as a numpy array ({err}); the store's CpG axis file is damaged"
                ) from err
            if array is None and required:
                raise CorruptStoreError(f"{where}/{key} is missing; the store's CpG axis is incomplete")
            return array

        index = INDEX_DIR
        ids = read("cpg_ids.npy")
        pos = read(f"{index}/pos.npy", required=False)
        has_loci = pos is not None
        axis = cls(
            ids=ids,
            chrom_names=read(f"{index}/chrom_names.npy", mmap=False) if has_loci else None,
            chrom_codes=read(f"{index}/chrom.npy") if has_loci else None,
            pos=pos,
            source=source,
            remote=remote,
        )
        axis._tables.update(sorted_ids=read(f"{index}/sorted_ids.npy"), sorted_order=read(f"{index}/sorted_order.npy"))
        if has_loci:
            axis._tables.update(
                locus_keys=read(f"{index}/locus_keys.npy"), locus_order=read(f"{index}/locus_order.npy", required=False)
            )
        for name, table in axis._tables.items():
            if table is not None and len(table) != len(ids):
                raise CorruptStoreError(
                    f"{where}/{index}/{name} has {len(table)} entries for {len(ids)} CpGs; the CpG axis of a store "
                    "must never change"
                )
        return axis


#: Directory of a store holding the loci and look-up tables of the axis.
INDEX_DIR = "cpg_index"
#: Environment variable naming the local cache of remote stores' CpG axes.
CACHE_ENV = "XR_METHYL_CACHE"


@dataclass(frozen=True)
class RemoteAxis:
    """Where a remote store's axis files are (a picklable storage) and their sha256 (from the manifest)."""

    storage: Any
    files: tuple[tuple[str, str], ...]


def open_axis(
    storage, files: Mapping[str, str], *, ids_sha256: str, data: Mapping[str, bytes] | None = None, check: bool = True
) -> CpgAxis:
    """The CpG axis of a store, checked against the manifest unless ``check`` is false.

    ``files``: the sha256 of each axis file, as the manifest records them
    (``axis_files``; empty in stores created before they were recorded, whose
    ids are checked against ``ids_sha256``).  Local stores are memory-mapped in
    place; S3 stores through the local cache (or, without ``files``, read into
    memory).
    """
    if storage.is_local:
        if not check:
            return CpgAxis.open(storage.root)
        if not files:
            # Created before per-file hashes were recorded: the ids are checked against cpg_ids_sha256;
            # verify checks the look-up tables against the ids.
            return open_checked(storage.root, {"cpg_ids.npy": ("ids", ids_sha256)}, where=storage.uri)
        unrecorded = [
            name
            for name in INDEX_FILES
            if f"{INDEX_DIR}/{name}" not in files and (storage.root / INDEX_DIR / name).exists()
        ]
        if unrecorded:
            raise CorruptStoreError(
                f"{storage.uri}/{INDEX_DIR}/{unrecorded[0]} is not one of the CpG axis files the store was created "
                f"with (manifest.json lists {', '.join(sorted(files))}); remove it or restore the store from a copy"
            )
        return open_checked(storage.root, {key: ("file", digest) for key, digest in files.items()}, where=storage.uri)
    if files:
        return open_remote(storage, files, data=data)
    # A store written before axis_files were recorded: no cache key to trust, so read it into memory.
    keys = ["cpg_ids.npy", *(f"{INDEX_DIR}/{name}" for name in storage.list_dir(INDEX_DIR))]
    try:
        return CpgAxis.from_files({key: storage.read_bytes(key) for key in keys})
    except FileNotFoundError as err:
        raise CorruptStoreError(f"{storage.uri}: cannot read the store's CpG axis files: {err}") from err


def axis_from(cpg_ids, warehouse) -> CpgAxis:
    """The axis of a new store: ``cpg_ids`` (ids, or a table with loci) or the warehouse's ``cpgs`` table.

    Ids given with a warehouse take their loci from its ``cpgs`` table.
    """
    if cpg_ids is None:
        if warehouse is None:
            raise StoreError("give cpg_ids or a warehouse: the CpG axis must be fixed when a store is created")
        return CpgAxis.from_table(warehouse.cpgs())
    if isinstance(cpg_ids, pa.Table):
        return CpgAxis.from_table(cpg_ids)
    if hasattr(cpg_ids, "columns") and "cpg_id" in getattr(cpg_ids, "columns", ()):  # a pandas DataFrame
        return CpgAxis.from_table(pa.Table.from_pandas(cpg_ids, preserve_index=False))
    axis = CpgAxis.from_ids([str(c) if isinstance(c, np.str_) else c for c in cpg_ids])
    if warehouse is None:
        return axis
    # Loci of the requested ids, from the warehouse's cpgs table.
    table = warehouse.cpgs()
    wanted = axis.to_arrow()
    where = pc.index_in(wanted, value_set=table.column("cpg_id").combine_chunks().cast(pa.string()))
    if where.null_count:
        unknown = wanted.filter(pc.is_null(where))
        raise DataError(f"{len(unknown)} cpg_id(s) are not in the warehouse's cpgs table, e.g. {unknown[0].as_py()!r}")
    return CpgAxis.from_table(table.take(where))


def file_hashes(files: Mapping[str, bytes]) -> dict[str, str]:
    """sha256 of each axis file, as the manifest records them (``axis_files``)."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


def cache_root() -> Path:
    """The local cache of remote CpG axes: ``$XR_METHYL_CACHE`` or ``~/.cache/xr_methyl``, then ``cpg_axis/``."""
    return _cache_base() / "cpg_axis"


def _cache_base() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/xr_methyl").expanduser()


def open_remote(storage, files: Mapping[str, str], *, data: Mapping[str, bytes] | None = None) -> CpgAxis:
    """Open the axis of a remote store through the local cache, downloading it the first time.

    ``files`` maps each axis file to its sha256 (the manifest's ``axis_files``);
    the cache folder is named by a hash of that mapping, so it can only hold
    these exact files.  ``data`` gives the files' bytes when the caller has
    them (a create), saving the download.
    """
    remote = RemoteAxis(storage, tuple(sorted(files.items())))
    key = hashlib.sha256(json.dumps(remote.files).encode()).hexdigest()[:32]
    root = cache_root()
    target = root / key
    if (target / "cpg_ids.npy").exists():
        # Checked like a local store's files: a copy damaged since it was downloaded is fetched again.
        try:
            return open_checked(
                target,
                {name: ("file", digest) for name, digest in files.items()},
                where=f"the local copy {target} of the CpG axis of {storage.uri}",
                remote=remote,
            )
        except CorruptStoreError as err:
            log.warning("%s; downloading it again", err)
            _discard(target)
    try:
        _fill_cache(storage, dict(files), root, target, data)
    except CorruptStoreError:
        raise
    except OSError as err:  # a read-only or full home: read into memory instead
        log.warning("cannot cache the CpG axis of %s under %s (%s); reading it into memory", storage.uri, root, err)
        return CpgAxis.from_files(_fetch(storage, files, data), remote=remote)
    return CpgAxis.open(target, remote=remote)  # every file was hashed as it was written


def _discard(target: Path) -> None:
    """Move a damaged cache folder out of the way (other processes may still map its files), then remove it."""
    trash = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.discarded")
    try:
        os.rename(target, trash)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def _fetch(storage, files: Mapping[str, str], data: Mapping[str, bytes] | None) -> dict[str, bytes]:
    out = {}
    for name, digest in files.items():
        out[name] = data[name] if data and name in data else storage.read_bytes(name)
        if hashlib.sha256(out[name]).hexdigest() != digest:
            raise CorruptStoreError(
                f"{storage.uri}/{name} does not match the sha256 the manifest records; "
                "the CpG axis of a store must never change"
            )
    return out


def _fill_cache(storage, files: dict[str, str], root: Path, target: Path, data: Mapping[str, bytes] | None) -> None:
    """Download (or write) every file into a private folder, check its hash, then rename the folder into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        for name, digest in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if data and name in data:
                path.write_bytes(data[name])
                got = hashlib.sha256(data[name]).hexdigest()
            else:
                got = storage.download(name, path)
            if got != digest:
                raise CorruptStoreError(
                    f"{storage.uri}/{name} does not match the sha256 the manifest records; "
                    "the CpG axis of a store must never change"
                )
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "cpg_ids.npy").exists():  # not another process filling it first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- checking axis files against the manifest -----------------------------------------------
#: Files of ``cpg_index/`` that :meth:`CpgAxis.open` reads when they are there.
INDEX_FILES = (
    "chrom.npy",
    "chrom_names.npy",
    "pos.npy",
    "sorted_ids.npy",
    "sorted_order.npy",
    "locus_keys.npy",
    "locus_order.npy",
)
#: A file changed less than this many seconds before it was checked is not remembered as checked: file
#: timestamps tick coarsely (milliseconds on a local disk, more on network file systems), so a second change
#: within the same tick could leave the file's identity as it was.
SETTLE_SECONDS = 2.0

#: What to do about an axis file that differs from the manifest's record.
NEVER_CHANGE = (
    "The CpG axis of a store must never change: put the original file back (from a copy of the store) "
    "or create a new store"
)
#: What a file must hash to: ``("file", sha256 of its bytes)``, or ``("ids", CpgAxis.sha256 of the array it
#: holds)`` for the ids of stores whose manifest predates per-file hashes.
Expected = tuple[str, str]
Identity = tuple[int, int, int, int, int]


def _identity(path: str | os.PathLike) -> Identity:
    """(device, inode, size, mtime_ns, ctime_ns) of a file: any write, replacement or copy changes it."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def open_checked(
    root: str | os.PathLike, expected: Mapping[str, Expected], *, where: str, remote: RemoteAxis | None = None
) -> CpgAxis:
    """Memory-map the axis under ``root`` after checking its files against ``expected`` (see :func:`check_files`).

    The files are stat'ed again once mapped: a file replaced between the check
    and the mapping is checked again.
    """
    for _ in range(3):
        checked = check_files(root, expected, where=where)
        axis = CpgAxis.open(root, remote=remote)
        if _identities(Path(root), expected, where) == checked:
            return axis
    raise CorruptStoreError(
        f"{where}: the CpG axis files kept changing while the store was opened; open it again "
        "once nothing writes to them"
    )


def check_files(root: str | os.PathLike, expected: Mapping[str, Expected], *, where: str) -> dict[str, Identity]:
    """Check files under ``root`` against the hashes the manifest records; return their identities.

    Hashing a 28 M-CpG axis takes a second or two, so a set of files found
    right is remembered by its identities (device, inode, size, mtime and
    ctime of each, with the expected hashes) in a per-user folder
    (``$XR_METHYL_CACHE/verified``, default ``~/.cache/xr_methyl/verified``);
    while the files keep those identities they are not read again.  Writing a
    file in place, replacing it (``np.save``, an editor, ``cp``) or copying the
    store elsewhere changes them, and the next open hashes the files again.

    Raises
    ------
    CorruptStoreError
        Naming the first file that is missing or differs from the manifest's record.
    """
    root = Path(root)
    seen = _identities(root, expected, where)
    record = _record_path(expected, seen)
    if record.exists():
        return seen
    problems = hash_problems(root, expected, where=where, identities=seen)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise CorruptStoreError(f"{problems[0]}{more}. {NEVER_CHANGE}")
    return seen


def hash_problems(
    root: str | os.PathLike,
    expected: Mapping[str, Expected],
    *,
    where: str,
    identities: Mapping[str, Identity] | None = None,
) -> list[str]:
    """Hash every file under ``root`` named in ``expected``; return what is missing or differs (empty: all right).

    When all are right and none changed while being read, their identities
    are remembered (see :func:`check_files`) unless a file changed within the
    last :data:`SETTLE_SECONDS`.
    """
    root = Path(root)
    started = time.time()
    present = [key for key in expected if (root / key).is_file()]
    problems = [f"{where}/{key} is missing" for key in expected if key not in present]
    if not problems and identities is None:
        identities = _identities(root, expected, where)
    # Largest first over two threads: hashlib and file reads release the GIL.
    present.sort(key=lambda key: -(root / key).stat().st_size)
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        digests = dict(zip(present, pool.map(lambda key: _DIGESTS[expected[key][0]](root / key), present)))
    for key, (kind, digest) in expected.items():
        got = digests.get(key)
        if got is not None and got != digest:
            problems.append(mismatch(where, key, kind, got, digest))
    if problems:
        return problems
    settled = all(ident[4] < (started - SETTLE_SECONDS) * 1e9 for ident in identities.values())
    if settled and _identities(root, expected, where) == identities:
        _remember(_record_path(expected, identities), where)
    return problems


def mismatch(where: str, key: str, kind: str, got: str, digest: str) -> str:
    """What to say of an axis file whose hash (``got``) is not the one the manifest records."""
    what = "the ids it holds differ from" if kind == "ids" else "it differs from"
    return (
        f"{where}/{key}: {what} what the store was created with (sha256 {got[:12]}... where manifest.json "
        f"records {digest[:12]}...)"
    )


def _identities(root: Path, expected: Mapping[str, Expected], where: str) -> dict[str, Identity]:
    out = {}
    for key in sorted(expected):
        try:
            out[key] = _identity(root / key)
        except FileNotFoundError:
            raise CorruptStoreError(f"{where}/{key} is missing; the store's CpG axis is incomplete") from None
    return out


def _record_path(expected: Mapping[str, Expected], seen: Mapping[str, Identity]) -> Path:
    """The file whose existence says: these exact files were found to hash as expected."""
    facts = [[key, *expected[key], *seen[key]] for key in sorted(expected)]
    return _cache_base() / "verified" / hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:40]


_cannot_remember_warned = False


def _remember(record: Path, where: str) -> None:
    global _cannot_remember_warned
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps({"files": where, "checked_at": time.time()}))
        os.replace(tmp, record)
    except OSError as err:  # a read-only home: every open checks the files again
        if not _cannot_remember_warned:
            _cannot_remember_warned = True
            log.warning(
                "cannot note under %s that the CpG axis of %s was checked (%s); every open will hash it again",
                record.parent,
                where,
                err,
            )


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _ids_sha256(path: Path) -> str:
    """:attr:`CpgAxis.sha256` of the ids in a ``.npy`` file, read in pieces (never whole into memory)."""
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        try:
            version = npy.read_magic(f)
            _, _, dtype = (npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0)(f)
        except ValueError:  # not a .npy file: it cannot hold the ids
            return hashlib.sha256(b"").hexdigest()
        digest = hashlib.sha256(dtype.str.encode() + b"\0")
        return hashlib.file_digest(f, lambda: digest).hexdigest()


_DIGESTS: dict[str, Callable[[Path], str]] = {"file": _file_sha256, "ids": _ids_sha256}


#: Bits of ``pos`` in a locus key ``chrom_code << LOCUS_SHIFT | pos``.
LOCUS_SHIFT = 40


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def locus_keys(chrom_codes: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """int64 keys that sort by (chromosome code, position)."""
    pos = np.asarray(pos, dtype=np.int64)
    if len(pos) and (pos.min() < 0 or pos.max() >= 1 << LOCUS_SHIFT):
        raise DataError(f"CpG positions must lie within [0, 2**{LOCUS_SHIFT}); got {pos.min()}..{pos.max()}")
    return (np.asarray(chrom_codes, dtype=np.int64) << LOCUS_SHIFT) | pos


def sort_order(ids: np.ndarray) -> np.ndarray:
    """``argsort`` of a fixed-width ``S`` array, far faster than numpy's string sort.

    The NUL-padded bytes are read as big-endian 8-byte words, which compare as
    the strings do (ids hold no NUL), and sorted with one ``lexsort``.
    """
    width = ids.dtype.itemsize
    n_words = -(-width // 8)
    padded = np.zeros((len(ids), n_words * 8), dtype=np.uint8)
    padded[:, :width] = np.ascontiguousarray(ids).view(np.uint8).reshape(len(ids), width)
    words = padded.view(">u8")
    order = np.lexsort([words[:, k] for k in reversed(range(n_words))])
    return order.astype(np.int32 if len(ids) < 2**31 else np.int64)


def _to_fixed_bytes(arr) -> tuple[np.ndarray, np.ndarray]:
    """Validate CpG ids and pack them into a fixed-width ASCII byte array; also return its sort order."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise DataError(f"CpG ids must be strings, got Arrow type {arr.type}")
    if len(arr) == 0:
        raise DataError("the CpG axis is empty; a store needs at least one CpG")
    if arr.null_count:
        raise DataError(f"{arr.null_count} CpG id(s) are null; every CpG needs an id")
    # ASCII without blanks or control characters keeps ids printable and lets the
    # axis live in a compact fixed-width byte array.
    ok = pc.match_substring_regex(arr, r"^[\x21-\x7e]+$")
    if not pc.all(ok).as_py():
        bad = arr.filter(pc.invert(ok))
        raise DataError(
            f"{len(bad)} CpG id(s) are not printable ASCII without spaces, e.g. {bad[0].as_py()!r}; "
            "rename them in the cpgs table"
        )
    packed = _pack_fixed_width(arr.cast(pa.large_string()))
    order = sort_order(packed)
    ordered = packed[order]
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(repeated):
        dup = ordered[repeated[0]].decode()
        raise DataError(f"CpG id {dup!r} appears more than once; the CpG axis needs unique ids")
    return packed, order


def _pack_fixed_width(arr: pa.LargeStringArray) -> np.ndarray:
    """Copy Arrow strings into a NUL-padded ``S<width>`` array, column by column of
    characters, without creating a Python object per id."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    width = max(1, int(lengths.max()))
    packed = np.zeros((len(arr), width), dtype=np.uint8)
    for j in range(width):
        has = lengths > j
        packed[has, j] = data[starts[has] + j]
    return packed.view(f"S{width}").ravel()
