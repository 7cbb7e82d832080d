"""``xr-methyl verify``: is a store whole, and does it still say what the warehouse says?

:func:`verify_store` never raises on a damaged store: it collects every
problem it finds into a :class:`VerifyReport`.  Whatever would make another
command fail is a problem; a note is only something worth knowing (what an
interrupted append left, which the next append or ``gc`` reclaims).  It checks

* everything an open reads: the manifest (every field), ``sample_ids.json``
  (the commit), ``ingested_batches.json`` and ``samples.json`` (their shape,
  and that they agree with the commit);
* every file of the CpG axis (``cpg_ids.npy``, ``cpg_index/``) against the
  sha256 the manifest records, and the loci against the axis;
* ``provenance.json`` as ``xr-methyl info`` reads it;
* each array's ``zarr.json`` against the manifest (shape, dtype, chunk and
  shard shapes, fill value, dimension names);
* every committed block: its record ``blocks/<i>.json`` is there and well
  formed, the shard objects it lists are present with the recorded size and
  sha256, none extra, and every shard decodes (its inner chunks match their
  crc32c, in stores that have them); padding rows are empty; betas lie in
  [0, 1]; the CpG-major copy of beta (if the store keeps one) holds beta's
  values;
* with ``cells > 0``: that many random (sample, CpG) cells re-read from the
  warehouse through the :class:`~xr_methyl.warehouse.Warehouse` protocol equal
  the stored values exactly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xr_methyl.errors import CorruptStoreError, MethylError
from xr_methyl.zarrio.integrity import VERIFY_HINT, read_checked

#: At most this many samples are exported from the warehouse for a cell check.
MAX_CHECK_SAMPLES = 16


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_store`: healthy when ``problems`` is empty."""

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not damage (e.g. reclaimable orphans)
    checked: dict[str, int] = field(default_factory=dict)
    #: Why the store did not open, if it did not.
    error: Exception | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = ", ".join(f"{v:,} {k}" for k, v in self.checked.items())
        if self.ok:
            return f"healthy: {self.path} ({counts})"
        return f"NOT healthy: {self.path}: {len(self.problems)} problem(s); first: {self.problems[0]}"


def verify_store(
    store, *, warehouse=None, cells: int = 0, seed: int | None = None, storage_options: dict | None = None
) -> VerifyReport:
    """Check a store (a :class:`~xr_methyl.MethylStore` or a path) and report every problem.

    Parameters
    ----------
    store
        The store, or its path.
    warehouse
        Where to re-read cells from (a ``Warehouse``, URI or path); default: the
        one recorded in the store's manifest.  Only used when ``cells > 0``.
    cells
        How many random (sample, CpG) cells to compare with the warehouse
        (spread over at most :data:`MAX_CHECK_SAMPLES` random samples).
    seed
        Seed of the random choice of cells.
    storage_options
        For a store given by an ``s3://`` location: endpoint, region, credentials.
    """
    from xr_methyl.store import MethylStore

    path = str(getattr(getattr(store, "storage", None), "uri", store))
    report = VerifyReport(path=path)
    try:
        if not isinstance(store, MethylStore):
            # The axis files are hashed by _check_axis, which reports each one that differs.
            store = MethylStore._open(store, storage_options=storage_options, check_axis=False)
        else:
            store.refresh()
    except (MethylError, OSError) as err:
        report.problems.append(f"the store does not open: {err}")
        report.error = err
        return report
    checks = (_check_axis, _check_sidecars, _check_provenance, _check_arrays, _check_blocks)
    for check in checks:
        try:
            check(store, report)
        except (MethylError, OSError, ValueError, KeyError, TypeError) as err:
            report.problems.append(f"{check.__name__.removeprefix('_check_')}: {type(err).__name__}: {err}")
    if cells > 0 and report.ok:
        try:
            _check_cells(store, report, warehouse, cells, seed)
        except MethylError as err:
            report.problems.append(f"cannot compare with the warehouse: {err}")
    return report


def _check_axis(store, report: VerifyReport) -> None:
    """Every file of the CpG axis against the manifest's sha256, then the loci against the axis."""
    from xr_methyl.store.cpg_axis import INDEX_DIR, INDEX_FILES, hash_problems, mismatch
    from xr_methyl.store.layout import CPG_IDS

    storage, manifest, axis = store.storage, store.manifest, store.cpg_axis
    files = manifest.axis_files
    if files:
        expected = {key: ("file", digest) for key, digest in files.items()}
        for name in INDEX_FILES:
            key = f"{INDEX_DIR}/{name}"
            if key not in files and storage.exists(key):
                report.problems.append(f"{key} is not one of the CpG axis files the store was created with")
    else:  # created before per-file hashes: the ids against cpg_ids_sha256, the look-up tables against the ids
        expected = {CPG_IDS: ("ids", manifest.cpg_ids_sha256)}
        _check_tables(axis, report)
    if storage.is_local:
        report.problems.extend(hash_problems(storage.root, expected, where=storage.uri))
    else:
        for key, (kind, digest) in expected.items():
            try:
                data = storage.read_bytes(key)
            except FileNotFoundError:
                report.problems.append(f"{storage.uri}/{key} is missing")
                continue
            got = hashlib.sha256(data).hexdigest() if kind == "file" else _ids_digest(data)
            if got != digest:
                report.problems.append(mismatch(storage.uri, key, kind, got, digest))
    loci = f"{INDEX_DIR}/chrom.npy and pos.npy"
    if axis.has_loci and not (len(axis.pos) == len(axis.chrom_codes) == len(axis)):
        report.problems.append(
            f"{loci} hold {len(axis.chrom_codes)} chromosomes and {len(axis.pos)} positions for {len(axis)} CpGs"
        )
    elif (
        axis.has_loci
        and len(axis.chrom_codes)
        and not 0 <= int(axis.chrom_codes.min()) <= int(axis.chrom_codes.max()) < len(axis.chrom_names)
    ):
        report.problems.append(f"{loci} refer to a chromosome that the names do not list")
    report.checked["cpgs"] = len(axis)


def _ids_digest(data: bytes) -> str:
    """:attr:`CpgAxis.sha256` of the ids in the bytes of a ``.npy`` file."""
    import io

    from xr_methyl.store.cpg_axis import CpgAxis

    try:
        ids = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return hashlib.sha256(b"").hexdigest()
    return CpgAxis(ids=ids).sha256


def _check_tables(axis, report: VerifyReport) -> None:
    """The look-up tables of ``cpg_index/`` must say what the ids and loci say (stores without per-file hashes)."""
    from xr_methyl.store.cpg_axis import locus_keys

    tables = axis._tables
    order, ids = tables.get("sorted_order"), tables.get("sorted_ids")
    if order is None or ids is None:
        return  # an axis without its tables on disk (they are built from the ids when needed)
    if not (np.array_equal(axis.ids[order], ids) and bool(np.all(ids[1:] > ids[:-1]))):
        report.problems.append("cpg_index/sorted_ids.npy and sorted_order.npy do not sort cpg_ids.npy")
    if axis.has_loci and tables.get("locus_keys") is not None:
        keys, where = locus_keys(axis.chrom_codes, axis.pos), tables.get("locus_order")
        if not np.array_equal(keys if where is None else keys[where], tables["locus_keys"]):
            report.problems.append("cpg_index/locus_keys.npy does not hold the loci of chrom.npy and pos.npy in order")


def _check_sidecars(store, report: VerifyReport) -> None:
    from xr_methyl.store.layout import BATCHES, SAMPLES

    commit = store.commit
    samples = store.storage.read_json(SAMPLES)
    batches = store.storage.read_json(BATCHES)
    member_of: dict[str, list[str]] = {}
    for batch, members in batches.items():
        for s in members:
            member_of.setdefault(s, []).append(batch)
    for s in commit.sample_ids:
        meta = samples.get(s)
        if not isinstance(meta, dict):
            report.problems.append(f"committed sample {s!r} has no entry in samples.json")
            continue
        where = member_of.get(s, [])
        if len(where) != 1:
            report.problems.append(
                f"committed sample {s!r} is listed in {len(where)} batches of "
                f"ingested_batches.json ({where}); expected exactly one"
            )
        elif meta.get("batch_id") != where[0]:
            report.problems.append(
                f"sample {s!r}: samples.json says batch {meta.get('batch_id')!r}, "
                f"ingested_batches.json says {where[0]!r}"
            )
    committed = set(commit.sample_ids)
    extra = (set(samples) | set(member_of)) - committed
    if extra:
        report.notes.append(
            f"{len(extra)} uncommitted sample(s) in the sidecars (left by an interrupted append; "
            "invisible to readers; xr-methyl gc removes them)"
        )
    report.checked["samples"] = len(committed)


def _check_provenance(store, report: VerifyReport) -> None:
    """``provenance.json`` (absent when no append recorded its cost) must read as ``xr-methyl info`` reads it."""
    store.cost()  # raises CorruptStoreError naming the file and the entry


def _check_arrays(store, report: VerifyReport) -> None:
    layout = store.layout
    main = ((layout.sample_block, layout.cpg_shard), (layout.chunk_rows, layout.cpg_chunk))
    expected = {"beta": (np.dtype("float32"), "nan", main), "coverage": (store.coverage_dtype, 0, main)}
    if layout.by_cpg_chunk:
        copy_grid = (
            (layout.sample_block, layout.by_cpg_shard(store.n_cpgs)),
            (layout.sample_block, layout.by_cpg_chunk),
        )
        expected["beta_by_cpg"] = (np.dtype("float32"), "nan", copy_grid)
    for name, (dtype, fill, (shards, chunks)) in expected.items():
        try:
            arr = store.array(name)
        except CorruptStoreError as err:  # a broken zarr.json or a short shape: the other arrays are still checked
            report.problems.append(str(err))
            continue
        meta = arr.metadata
        if arr.dtype != dtype:
            report.problems.append(f"{name}: dtype {arr.dtype}, the manifest says {dtype}")
        if tuple(arr.shards or ()) != shards or tuple(arr.chunks) != chunks:
            report.problems.append(
                f"{name}: shards {arr.shards} / chunks {arr.chunks}, the manifest says {shards} / {chunks}"
            )
        if tuple(meta.dimension_names or ()) != ("sample", "cpg"):
            report.problems.append(f"{name}: dimension names {meta.dimension_names}, expected ('sample', 'cpg')")
        value = arr.fill_value
        if not (np.isnan(value) if fill == "nan" else value == fill):
            report.problems.append(f"{name}: fill value {value!r}, expected {fill}")
        extra_rows = arr.shape[0] - store.commit.n_rows
        if extra_rows:
            report.notes.append(
                f"{name}: {extra_rows} uncommitted row(s) past the commit (left by an interrupted "
                "append; invisible to readers; the next append or xr-methyl gc reclaims them)"
            )


def _check_blocks(store, report: VerifyReport) -> None:
    commit, layout = store.commit, store.layout
    arrays = {}
    for name in store.array_names:
        try:
            arrays[name] = store.array(name)
        except CorruptStoreError:
            pass  # reported by _check_arrays
    copy = arrays.get("beta_by_cpg")
    n_blocks = commit.n_rows // layout.sample_block
    shards = 0
    for b in range(n_blocks):
        record = _read_record(store, report, b)
        rows = slice(b * layout.sample_block, (b + 1) * layout.sample_block)
        padding = [i - rows.start for i in range(rows.start, rows.stop) if commit.rows[i] is None]
        copy_keys = store.shard_keys("beta_by_cpg", b, copy) if copy is not None else []
        for name, arr in arrays.items():
            keys = store.shard_keys(name, b, arr)
            if record is not None:
                shards += _check_recorded(store, report, name, b, keys, record[name])
            if name == "beta_by_cpg":
                continue  # its values are checked against beta's, shard by shard, below
            width = arr.shards[1]
            for j in range(math.ceil(store.n_cpgs / width)):
                cols = slice(j * width, (j + 1) * width)
                try:
                    values = read_checked(arr, rows, cols, lambda: arr[rows, cols])  # noqa: B023 (called at once)
                except CorruptStoreError as err:  # damaged bytes; any other error is a bug and propagates
                    report.problems.append(
                        f"{keys[j]} (rows {rows.start}-{rows.stop - 1}) does not decode: {_why(err)}"
                    )
                    values = None
                if name == "beta" and copy is not None:  # the copy's shard j covers the same CpGs
                    _check_copy(
                        store, report, copy, copy_keys[j], rows, j * width, min((j + 1) * width, store.n_cpgs), values
                    )
                if values is not None:
                    _check_values(report, name, keys[j], values, padding, commit.rows[rows])
    report.checked["blocks"] = n_blocks
    report.checked["shards"] = shards


def _read_record(store, report: VerifyReport, block: int) -> dict | None:
    """The shard record of a committed block, or None (reported as a problem) when it is missing or damaged."""
    from xr_methyl.store.layout import block_record_key

    key = block_record_key(block)
    try:
        record = store.storage.read_json(key)
    except FileNotFoundError:
        report.problems.append(
            f"{key} (the shard record of committed block {block}) is missing: the sizes and "
            "sha256 of its shards are lost, so a missing or altered shard would go unseen"
        )
        return None
    except ValueError as err:
        report.problems.append(f"{key} is not valid JSON ({err})")
        return None

    def entry_ok(entry) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)

    rows = [block * store.layout.sample_block, (block + 1) * store.layout.sample_block]
    if not (
        isinstance(record, dict)
        and record.get("block") == block
        and record.get("rows") == rows
        and all(
            isinstance(record.get(name), dict) and all(entry_ok(e) for e in record[name].values())
            for name in store.array_names
        )
    ):
        report.problems.append(
            f"{key} does not hold the shard record of block {block} (block {block}, rows {rows}, "
            f"and the size and sha256 of each shard of {', '.join(store.array_names)})"
        )
        return None
    return record


def _check_copy(
    store, report: VerifyReport, arr, key: str, rows: slice, lo: int, hi: int, beta: np.ndarray | None
) -> None:
    """One shard of the CpG-major copy must hold what beta holds (read by the reader that reads it).

    ``beta``: beta's values there, as the check of beta's shard decoded them (None: it did not decode,
    and is read here again, so that the copy's own damage is still reported).
    """
    from xr_methyl.zarrio.bycpg import read_by_cpg

    try:
        wanted = np.arange(rows.start, rows.stop)
        copy = read_by_cpg(arr, wanted, np.arange(lo, hi), block=store.layout.sample_block)
        if beta is None:
            main = store.array("beta")
            beta = read_checked(main, rows, slice(lo, hi), lambda: main[rows, lo:hi])
    except CorruptStoreError as err:  # damaged bytes; any other error is a bug and propagates
        report.problems.append(f"{key} (rows {rows.start}-{rows.stop - 1}) does not decode: {_why(err)}")
        return
    if not np.array_equal(copy, beta, equal_nan=True):
        i, j = (int(x[0]) for x in np.nonzero(~((copy == beta) | (np.isnan(copy) & np.isnan(beta)))))
        report.problems.append(
            f"{key} (rows {rows.start}-{rows.stop - 1}) differs from beta.zarr, e.g. at row "
            f"{rows.start + i}, CpG {lo + j}: {copy[i, j]!r} vs {beta[i, j]!r}"
        )


def _why(err: CorruptStoreError) -> str:
    """What a read found damaged, without the advice to run verify."""
    return str(err).removesuffix(f"; {VERIFY_HINT}")


def _check_recorded(store, report: VerifyReport, name: str, block: int, keys: list[str], recorded: dict) -> int:
    for key in keys:
        expected: dict[str, Any] | None = recorded.get(key)
        try:
            data = store.storage.read_bytes(key)
        except FileNotFoundError:
            if expected is not None:
                report.problems.append(
                    f"{key} of committed block {block} is missing ({expected['bytes']} bytes were written)"
                )
            continue
        if expected is None:
            report.problems.append(f"{key} of committed block {block} exists but its append wrote no such shard")
        elif len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
            report.problems.append(
                f"{key} of committed block {block} differs from what was written "
                f"({len(data)} bytes vs {expected['bytes']}, sha256 mismatch)"
            )
    return len(recorded)


def _check_values(report: VerifyReport, name: str, key: str, values: np.ndarray, padding: list[int], ids) -> None:
    empty = np.isnan(values) if name == "beta" else values == 0
    for i in padding:
        if not empty[i].all():
            report.problems.append(f"{key}: padding row {i} of its block holds data")
    if name == "beta":
        with np.errstate(invalid="ignore"):
            bad = ~(empty | ((values >= 0) & (values <= 1)))
        if bad.any():
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            report.problems.append(f"{key}: beta of sample {ids[i]!r} lies outside [0, 1]")


def _check_cells(store, report: VerifyReport, warehouse, cells: int, seed: int | None) -> None:
    import pyarrow.compute as pc

    from xr_methyl.store.layout import fill_missing
    from xr_methyl.warehouse import VALUE_TABLES, resolve

    ids = store.sample_ids
    if not ids:
        report.notes.append("no committed samples: no cells to compare with the warehouse")
        return
    rng = np.random.default_rng(seed)
    chosen = [ids[i] for i in rng.choice(len(ids), size=min(len(ids), MAX_CHECK_SAMPLES, cells), replace=False)]
    cell_sample = rng.integers(len(chosen), size=cells)
    cell_cpg = rng.integers(store.n_cpgs, size=cells)
    labels = store.cpg_axis.labels()
    wh = resolve(warehouse, store)
    table = wh.resolve_samples(chosen)
    batch_of = dict(zip(table.column("sample_id").to_pylist(), table.column("batch_id").to_pylist()))
    for s in chosen:
        if s not in batch_of:
            report.problems.append(f"sample {s!r} is in the store but not in the warehouse {wh.describe()}")
    groups: dict[str, list[str]] = {}
    for s in chosen:
        if s in batch_of:
            groups.setdefault(batch_of[s], []).append(s)
    wanted_cpgs = sorted({labels[c] for c in cell_cpg})
    mismatches = 0
    for name in VALUE_TABLES:
        truth: dict[tuple[str, str], float] = {}
        with wh.export(name, groups) as export:
            for batch in groups:
                rows = export.dataset(batch).to_table(
                    filter=pc.field("cpg_id").isin(wanted_cpgs), columns=["sample_id", "cpg_id", "value"]
                )
                for s, c, v in zip(*(rows.column(k).to_pylist() for k in ("sample_id", "cpg_id", "value"))):
                    truth[(s, c)] = v
        stored = store.read(name, chosen, np.unique(cell_cpg))
        column = {int(c): i for i, c in enumerate(np.unique(cell_cpg))}
        for si, ci in sorted(set(zip(cell_sample.tolist(), cell_cpg.tolist()))):
            s, cpg = chosen[si], str(labels[ci])
            if s not in batch_of:
                continue
            got = stored[si, column[int(ci)]]
            want = truth.get((s, cpg))
            # No row, a NULL and a NaN are all stored as the fill value (the loader's rule, fill_missing).
            expected = fill_missing(name, np.array([np.nan if want is None else want], dtype=np.float64))
            if not np.array_equal(expected.astype(stored.dtype), got[None], equal_nan=True):
                mismatches += 1
                if mismatches <= 10:
                    shown = "no row" if (s, cpg) not in truth else "NULL" if want is None else repr(want)
                    report.problems.append(
                        f"{name} of ({s!r}, {cpg!r}): store has {got.item()!r}, warehouse has {shown}"
                    )
    if mismatches > 10:
        report.problems.append(f"... {mismatches} mismatching cell(s) in all")
    report.checked["warehouse cells"] = cells
