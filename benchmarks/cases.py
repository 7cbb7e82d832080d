"""One benchmark measurement per function, each run in a fresh process.

``python -m benchmarks.cases CASE PARAMS_JSON`` runs one case and prints one
JSON line: what it measured, plus the process's peak RSS.  A fresh process per
case keeps each peak RSS and each cold cache honest; :mod:`benchmarks.run`
orchestrates them.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def case(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    CASES[fn.__name__] = fn
    return fn


def rss_now() -> int:
    """Resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ByteCounter:
    """Counts bytes that zarr's LocalStore reads and writes, by file (patched in for one case).

    zarr 3.1 reaches files through two module-level helpers of ``zarr.storage._local``
    (from its async and its sync paths alike): wrapping them sees every byte.  xr_methyl's
    own reader of local shards (:mod:`xr_methyl.zarrio.rowread`) reads with ``os.pread``, wrapped too.
    """

    def __init__(self) -> None:
        from zarr.storage import _local

        self.read: dict[str, int] = {}
        self.written: dict[str, int] = {}
        get, put = _local._get, _local._put

        def counted_get(path, prototype, byte_range):
            buf = get(path, prototype, byte_range)
            self.read[str(path)] = self.read.get(str(path), 0) + len(buf)
            return buf

        def counted_put(path, value, *args, **kwargs):
            self.written[str(path)] = self.written.get(str(path), 0) + len(value)
            return put(path, value, *args, **kwargs)

        _local._get, _local._put = counted_get, counted_put
        pread = os.pread

        def counted_pread(fd, n, offset):
            data = pread(fd, n, offset)
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.read[path] = self.read.get(path, 0) + len(data)
            return data

        os.pread = counted_pread
        self._originals = (get, put, pread)

    def remove(self) -> None:
        """Stop counting (the wrapped ``os.pread`` costs a syscall per read: not for timed runs of many)."""
        from zarr.storage import _local

        _local._get, _local._put, os.pread = self._originals

    def reset(self) -> None:
        self.read.clear()
        self.written.clear()

    @property
    def bytes_read(self) -> int:
        return sum(self.read.values())


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of every file under root: to tell whether an object was rewritten."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[str(p)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


# ----------------------------------------------------------------------------- data set-up


@case
def build_warehouse(p: dict[str, Any]) -> dict[str, Any]:
    """A synthetic cohort in a fresh local Iceberg warehouse."""
    from xr_methyl import LocalWarehouse
    from xr_methyl.synthetic import build_cohort

    t0 = time.perf_counter()
    cohort = build_cohort(
        LocalWarehouse(p["path"]), n_samples=p["samples"], n_cpgs=p["cpgs"], batch_size=p["batch_size"], seed=p["seed"]
    )
    return {"seconds": time.perf_counter() - t0, "batches": cohort.batches}


@case
def build_one_batch_warehouse(p: dict[str, Any]) -> dict[str, Any]:
    """A warehouse holding the given samples of another one as a single batch ("P000").

    Copied source batch by source batch, so memory stays that of one 8-sample batch
    (building a 32-sample plate with build_cohort would hold all its rows at once).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from xr_methyl import LocalWarehouse

    t0 = time.perf_counter()
    src, dst = LocalWarehouse(p["source"]), LocalWarehouse(p["path"])
    dst.create_tables(metadata_schema=pa.schema([("age", pa.float64()), ("sex", pa.string())]))
    dst.append("cpgs", src.cpgs())
    members = src.resolve_samples(p["samples"])
    dst.append("sample_batch_map", members.set_column(1, "batch_id", pa.array(["P000"] * len(members))))
    wanted = pa.array(p["samples"])
    for batch_id in dict.fromkeys(members["batch_id"].to_pylist()):
        for table in ("beta", "coverage"):
            rows = pads.dataset(_source_files(p["source"], table, [batch_id])).to_table(
                filter=pc.field("sample_id").isin(wanted)
            )
            dst.append(
                table,
                rows.set_column(rows.schema.get_field_index("batch_id"), "batch_id", pa.array(["P000"] * len(rows))),
            )
    return {"seconds": time.perf_counter() - t0, "batches": {"P000": p["samples"]}}


def _batches_of(warehouse: str, sample_ids: list[str]) -> dict[str, list[str]]:
    from xr_methyl import LocalWarehouse

    table = LocalWarehouse(warehouse).resolve_samples(sample_ids)
    groups: dict[str, list[str]] = {}
    for s, b in zip(table["sample_id"].to_pylist(), table["batch_id"].to_pylist()):
        groups.setdefault(b, []).append(s)
    return groups


def _source_files(warehouse: str, table: str, batch_ids: list[str]) -> list[str]:
    """The Iceberg data files of ``table`` for these batches (what DuckDB or pyarrow reads)."""
    from xr_methyl import LocalWarehouse

    wh = LocalWarehouse(warehouse)
    ice = wh._table(table)
    _, paths, _ = wh._plan(ice, ["batch_id", "sample_id", "cpg_id", table], batch_ids)
    assert paths is not None, "the benchmark warehouse is plain Parquet"
    return paths


# ----------------------------------------------------------------------------- ingest


@case
def ingest(p: dict[str, Any]) -> dict[str, Any]:
    """Warehouse export + locate + scatter + compress + write + commit of both tables."""
    from xr_methyl import Loader, LocalWarehouse, MethylStore

    wh = LocalWarehouse(p["warehouse"])
    store = MethylStore.create(p["store"], warehouse=wh)
    loader = Loader(store, wh, **({"max_memory": p["max_memory"]} if p.get("max_memory") else {}))
    client = cluster = None
    extra: dict[str, Any] = {}
    if p.get("workers"):
        from dask.distributed import Client, LocalCluster

        t0 = time.perf_counter()
        # dask's own worker settings (its MALLOC_TRIM_THRESHOLD_ included), as a user's cluster has them.
        cluster = LocalCluster(
            n_workers=p["workers"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=p.get("worker_memory", "3GiB"),
        )
        client = Client(cluster)
        # Worker start-up stays out of the timed region, as the imports of the single process do.
        for module in ("xr_methyl.ingest.loader", "xr_methyl.ingest.locate", "pyarrow.parquet", "zarr"):
            client.run(importlib.import_module, module)
        extra["cluster_start_seconds"] = time.perf_counter() - t0
    rss0 = rss_now()
    t0 = time.perf_counter()
    report = loader.ingest(p["samples"], progress=False, **({"client": client} if client else {}))
    seconds = time.perf_counter() - t0
    if client is not None:
        extra["worker_peak_rss"] = max(client.run(peak_rss).values())
        client.close()
        cluster.close()
    return {
        "seconds": seconds,
        "long_rows": report.long_rows,
        "rows_per_s": report.long_rows / seconds,
        "stages": report.seconds,
        "rss_before": rss0,
        "samples": len(report.ingested),
        **extra,
    }


@case
def pivot(p: dict[str, Any]) -> dict[str, Any]:
    """DuckDB PIVOT of the same long rows of both value tables into in-memory tables."""
    import duckdb

    groups = _batches_of(p["warehouse"], p["samples"])
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    samples = ", ".join("'" + s.replace("'", "''") + "'" for s in p["samples"])
    t0 = time.perf_counter()
    rows = long_rows = 0
    for table in p.get("tables", ["beta", "coverage"]):
        con.read_parquet(_source_files(p["warehouse"], table, list(groups)), hive_partitioning=False).create_view("src")
        long_rows += con.sql(f"SELECT count(*) FROM src WHERE sample_id IN ({samples})").fetchall()[0][0]
        # IN (...) lists the pivot columns: DuckDB need not scan for them first.
        wide = con.sql(
            f"PIVOT (SELECT sample_id, cpg_id, {table} FROM src WHERE sample_id IN ({samples})) "
            f"ON sample_id IN ({samples}) USING first({table}) GROUP BY cpg_id"
        ).to_arrow_table()
        rows = wide.num_rows
        del wide
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "long_rows": long_rows, "rows_per_s": long_rows / seconds, "wide_rows": rows}


@case
def decode(p: dict[str, Any]) -> dict[str, Any]:
    """Merely decoding the same Parquet columns (sample_id, cpg_id, value) with pyarrow."""
    import pyarrow.dataset as pads

    groups = _batches_of(p["warehouse"], p["samples"])
    t0 = time.perf_counter()
    long_rows = 0
    for table in ("beta", "coverage"):
        for batch in pads.dataset(_source_files(p["warehouse"], table, list(groups))).to_batches(
            columns=["sample_id", "cpg_id", table]
        ):
            long_rows += batch.num_rows
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "long_rows": long_rows, "rows_per_s": long_rows / seconds}


# ----------------------------------------------------------------------------- reads


@case
def build_read_store(p: dict[str, Any]) -> dict[str, Any]:
    """Ingest the warehouse's samples, then repeat their blocks under new ids up to ``rows`` samples.

    With ``by_cpg_chunk`` the store keeps the CpG-major copy of beta (``Layout.by_cpg_chunk``);
    ``twin`` (a path) builds the same appends into a default store beside it, timed apart, so
    that the copy's share of an append is measured in the same run.
    """
    from xr_methyl import Layout, Loader, LocalWarehouse, MethylStore

    t0 = time.perf_counter()
    wh = LocalWarehouse(p["warehouse"])
    layout = Layout(by_cpg_chunk=p.get("by_cpg_chunk", 0), by_cpg_codec=p.get("by_cpg_codec", "zstd"))
    store = MethylStore.create(p["store"], warehouse=wh, layout=layout)
    Loader(store, wh).ingest(p["samples"], progress=False)
    twin = MethylStore.create(p["twin"], warehouse=wh) if p.get("twin") else None
    stores = [store] + ([twin] if twin is not None else [])
    for s in stores:
        s.verify_axis()
    n = len(store.sample_ids)
    block = store.layout.sample_block
    beta, cov = store.array("beta"), store.array("coverage")  # these handles keep the ingested rows only
    ingested_blocks = store.commit.n_rows // block
    append_seconds: dict[int, list[float]] = {i: [] for i in range(len(stores))}
    k = 0
    while n < p["rows"]:
        lo = (k % ingested_blocks) * block
        ids = [f"P{n + i:05d}" for i in range(block)]
        b, c = beta[lo : lo + block], cov[lo : lo + block]
        for i, s in enumerate(stores):
            t1 = time.perf_counter()
            s.append(f"pad{k:04d}", ids, b, c)
            append_seconds[i].append(time.perf_counter() - t1)
        n += block
        k += 1
    out: dict[str, Any] = {
        "seconds": time.perf_counter() - t0,
        "samples": len(store.sample_ids),
        "bytes": store.info()["bytes"],
    }
    if append_seconds[0]:
        out["append_seconds"] = float(np.median(append_seconds[0]))
    if twin is not None:
        out["twin_append_seconds"] = float(np.median(append_seconds[1]))
        out["twin_bytes"] = twin.info()["bytes"]
    return out


def _repeat(fn, times: int, *, count_bytes: bool = False) -> tuple[dict[str, Any], Any]:
    """Run ``fn`` ``times`` in this process: the first run (with its one-off costs) and the median of the rest.

    Returns the timings (with a checksum and the shape of the result) and the last result.  With
    ``count_bytes``, ``bytes`` is what the first run read from disk, counted in that run only (the
    counter costs a syscall per read, which would weigh on the timed runs of many small reads).
    """
    seconds, value, first_bytes = [], None, 0
    for k in range(times):
        value = None  # free the previous result first, as a user's next read would
        counter = ByteCounter() if count_bytes and k == 0 else None
        t0 = time.perf_counter()
        value = fn()
        seconds.append(time.perf_counter() - t0)
        if counter is not None:
            first_bytes = counter.bytes_read
            counter.remove()
    steady = seconds[1:] or seconds
    timings = {
        "seconds": float(np.median(steady)),
        "first_seconds": seconds[0],
        "all_seconds": seconds,
        "checksum": float(np.nansum(value, dtype=np.float64)),
        "shape": list(value.shape),
    }
    if count_bytes:
        timings["bytes"] = first_bytes
    return timings, value


@case
def read_ensure(p: dict[str, Any]) -> dict[str, Any]:
    """open_dataset + ensure(50 cached samples) + .beta.values (first run, then the median of the next ones)."""
    import dask.array  # noqa: F401  (imports are not part of the read, as for xarray and zarr)
    import xarray as xr

    import xr_methyl  # noqa: F401

    def read():
        ds = xr.open_dataset(p["store"], engine="methylzarr")
        return ds.methyl.ensure(p["samples"], progress=False).beta.values

    return _repeat(read, p.get("repeats", 5))[0]


def _zarr_rows(p: dict[str, Any]):
    import zarr

    root = Path(p["store"])
    rows_of = {s: i for i, s in enumerate(json.loads((root / "sample_ids.json").read_text())) if s is not None}
    return zarr.open_array(root / "beta.zarr", mode="r"), np.array([rows_of[s] for s in p["samples"]])


@case
def read_zarr(p: dict[str, Any]) -> dict[str, Any]:
    """zarr-python reading the same rows straight from beta.zarr, each way a user would write it; the fastest counts.

    ``blocks``: each 8-row shard block as one slice, then pick the rows (one read per shard);
    ``rows``: one slice per row (reads only the rows' inner chunks).  ``arr.oindex[rows]``
    is left out: zarr 3.1 reads an integer list element by element inside a shard
    (minutes at the reference size).
    """
    ways = {}

    def blocks():
        arr, rows = _zarr_rows(p)
        block = arr.shards[0]
        out = np.empty((len(rows), arr.shape[1]), arr.dtype)
        for b in np.unique(rows // block):
            piece = arr[b * block : (b + 1) * block]
            where = np.flatnonzero(rows // block == b)
            out[where] = piece[rows[where] - b * block]
        return out

    def by_row():
        arr, rows = _zarr_rows(p)
        out = np.empty((len(rows), arr.shape[1]), arr.dtype)
        for i, r in enumerate(rows):
            out[i] = arr[r]
        return out

    for name, fn in (("blocks", blocks), ("rows", by_row)):
        ways[name], _ = _repeat(fn, p.get("repeats", 5))
    best = min(ways, key=lambda name: ways[name]["seconds"])
    return {**ways[best], "way": best, "ways": ways}


@case
def read_pivot(p: dict[str, Any]) -> dict[str, Any]:
    """DuckDB pivot of the same 50 samples' beta from the warehouse into memory."""
    return pivot({**p, "tables": ["beta"]})


@case
def read_cpgs(p: dict[str, Any]) -> dict[str, Any]:
    """``n`` scattered CpGs x all samples, then the full matrix, with bytes read from disk.

    The scattered read goes through xarray (which reads the store's CpG-major copy of beta
    when it keeps one), then again on beta alone (what a default store reads: the same
    files as a store without the copy).  Each read opens the store afresh and runs three
    times, as the cached reads do: the median of the runs after the first counts.
    """
    import xarray as xr

    import xr_methyl  # noqa: F401
    from xr_methyl.store import MethylStore
    from xr_methyl.zarrio.rowread import read_rows

    n_cpgs = xr.open_dataset(p["store"], engine="methylzarr").sizes["cpg"]
    cols = np.sort(np.random.default_rng(7).choice(n_cpgs, p["n"], replace=False))
    store = MethylStore.open(p["store"])
    rows = np.array([i for i, s in enumerate(store.commit.rows) if s is not None])

    def runs(fn):
        return _repeat(fn, p.get("repeats", 3), count_bytes=True)

    some, some_values = runs(lambda: xr.open_dataset(p["store"], engine="methylzarr").beta.isel(cpg=cols).values)
    main, main_values = runs(
        lambda: read_rows(MethylStore.open(p["store"]).array("beta"), rows, cols, chunk_rows=store.layout.chunk_rows)
    )
    full, full_values = runs(lambda: xr.open_dataset(p["store"], engine="methylzarr").beta.values)
    assert np.array_equal(full_values[:, cols], some_values, equal_nan=True)
    assert np.array_equal(main_values, some_values, equal_nan=True)
    return {
        "scattered_seconds": some["seconds"],
        "scattered_all_seconds": some["all_seconds"],
        "scattered_bytes": some["bytes"],
        "main_scattered_seconds": main["seconds"],
        "main_scattered_all_seconds": main["all_seconds"],
        "main_scattered_bytes": main["bytes"],
        "full_seconds": full["seconds"],
        "full_all_seconds": full["all_seconds"],
        "full_bytes": full["bytes"],
        "by_cpg": store.manifest.layout.to_json().get("by_cpg"),
        "shape": list(full_values.shape),
    }


# ----------------------------------------------------------------------------- appends


@case
def build_append_store(p: dict[str, Any]) -> dict[str, Any]:
    """A store of ``batches`` 8-sample batches: real values in the first CpG shard, empty elsewhere."""
    from xr_methyl import MethylStore

    t0 = time.perf_counter()
    store = MethylStore.create(p["store"], cpg_ids=_axis_table(p["cpgs"]))
    for k in range(p["batches"]):
        beta, cov = _block(store, k, p["width"])
        store.append(f"B{k:04d}", [f"S{k:04d}_{i}" for i in range(len(beta))], beta, cov)
    return {"seconds": time.perf_counter() - t0}


def _block(store, seed: int, width: int):
    rng = np.random.default_rng(seed)
    shape = (store.layout.sample_block, store.n_cpgs)
    beta = np.full(shape, np.nan, np.float32)
    beta[:, :width] = rng.beta(0.5, 0.5, (shape[0], width)).astype(np.float32)
    cov = np.zeros(shape, store.coverage_dtype)
    cov[:, :width] = rng.integers(1, 40, (shape[0], width))
    return beta, cov


@case
def append(p: dict[str, Any]) -> dict[str, Any]:
    """Append 8-sample batches with values on every CpG to each store of ``stores``, taking turns.

    Turns, in one process, so that what the machine does meanwhile (the kernel
    writing back the previous appends' pages, above all) falls on every store
    alike; the median of 5 appends per store counts.  Bytes of existing objects
    read or rewritten are counted per store.
    """
    from xr_methyl import MethylStore

    stores = {path: MethylStore.open(path) for path in p["stores"]}
    for store in stores.values():
        store.verify_axis()  # once per store object: not part of an append's cost
    first = next(iter(stores.values()))
    beta, cov = _block(first, 10_000, first.n_cpgs)
    before = {path: _files(Path(path)) for path in stores}
    counters = {path: {"read": {}, "written": 0} for path in stores}
    times: dict[str, list[float]] = {path: [] for path in stores}
    counter = ByteCounter()
    for k in range(p.get("repeats", 5)):
        for path, store in stores.items():
            counter.reset()
            t0 = time.perf_counter()
            store.append(f"new{k}", [f"N{k}_{i}" for i in range(len(beta))], beta, cov)
            times[path].append(time.perf_counter() - t0)
            for f, n in counter.read.items():
                counters[path]["read"][f] = counters[path]["read"].get(f, 0) + n
            counters[path]["written"] += sum(counter.written.values())
    out = {}
    for path in stores:
        root, after = Path(path), _files(Path(path))
        existing_data = {f for f in before[path] if "/c/" in f}
        out[path] = {
            "seconds": float(np.median(times[path])),
            "all_seconds": times[path],
            "existing_shard_bytes_read": sum(n for f, n in counters[path]["read"].items() if f in existing_data),
            "existing_shards_rewritten": sum(1 for f in existing_data if after.get(f) != before[path][f]),
            "existing_metadata_rewritten": sorted(
                os.path.relpath(f, root)
                for f in before[path]
                if f not in existing_data and after.get(f) != before[path][f]
            ),
            "new_bytes_written": counters[path]["written"] // len(times[path]),
        }
    return {"stores": out}


# ----------------------------------------------------------------------------- open / index


def _axis_table(n: int, n_chroms: int = 22):
    """``n`` CpGs in genome order on ``n_chroms`` chromosomes, ids "chrK:pos"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    per = -(-n // n_chroms)
    chrom_index = np.repeat(np.arange(n_chroms, dtype=np.int32), per)[:n]
    pos = 10_000 + (np.arange(n) % per) * 37
    names = pa.array([f"chr{k + 1}" for k in range(n_chroms)])
    chrom = names.take(pa.array(chrom_index))
    ids = pc.binary_join_element_wise(chrom, pa.array(pos).cast(pa.string()), ":")
    return pa.table({"cpg_id": ids, "chrom": chrom, "pos": pa.array(pos, pa.int64())})


@case
def build_index_store(p: dict[str, Any]) -> dict[str, Any]:
    """A store with a ``cpgs``-long CpG axis and one (empty) batch of 8 samples."""
    from xr_methyl import MethylStore

    t0 = time.perf_counter()
    table = _axis_table(p["cpgs"])
    store = MethylStore.create(p["store"], cpg_ids=table)
    shape = (8, store.n_cpgs)
    store.append(
        "B0", [f"S{i}" for i in range(8)], np.full(shape, np.nan, np.float32), np.zeros(shape, store.coverage_dtype)
    )
    return {"seconds": time.perf_counter() - t0}


def _queries(n_cpgs: int, n: int):
    rng = np.random.default_rng(5)
    table = _axis_table(n_cpgs)
    cols = rng.choice(n_cpgs, n, replace=False)
    ids = table["cpg_id"].take(cols).to_pylist()
    mid = table.slice(n_cpgs // 2 + n_cpgs // 88, 1)  # a quarter into a chromosome
    chrom, start = mid["chrom"][0].as_py(), mid["pos"][0].as_py()
    return ids, (chrom, start, start + 100_000)


@case
def open_index(p: dict[str, Any]) -> dict[str, Any]:
    """xr.open_dataset of the store, then .sel of 5,000 ids and a 100 kb region."""
    import xarray as xr

    import xr_methyl  # noqa: F401

    ids, (chrom, start, end) = _queries(p["cpgs"], p["n"])
    rss0 = rss_now()
    t0 = time.perf_counter()
    ds = xr.open_dataset(p["store"], engine="methylzarr")
    t_open = time.perf_counter() - t0
    rss_open = rss_now() - rss0
    t0 = time.perf_counter()
    picked = ds.sel(cpg=ids)
    t_sel = time.perf_counter() - t0
    assert [str(c) for c in picked.cpg.values[:3]] == ids[:3]
    t0 = time.perf_counter()
    region = ds.methyl.region(chrom, start, end)
    t_region = time.perf_counter() - t0
    return {
        "open_seconds": t_open,
        "open_rss_growth": rss_open,
        "sel_seconds": t_sel,
        "region_seconds": t_region,
        "region_cpgs": int(region.sizes["cpg"]),
        "rss_growth": rss_now() - rss0,
    }


@case
def open_pandas(p: dict[str, Any]) -> dict[str, Any]:
    """Baseline: the same ids as a plain PandasIndex (what a default xarray index builds), then .sel."""
    import xarray as xr

    ids, _ = _queries(p["cpgs"], p["n"])
    rss0 = rss_now()
    t0 = time.perf_counter()
    raw = np.load(Path(p["store"]) / "cpg_ids.npy")
    ds = xr.Dataset(coords={"cpg": ("cpg", raw.astype(f"U{raw.dtype.itemsize}"))})
    t_open = time.perf_counter() - t0
    rss_open = rss_now() - rss0
    t0 = time.perf_counter()
    ds.sel(cpg=ids)
    t_sel = time.perf_counter() - t0
    return {"open_seconds": t_open, "open_rss_growth": rss_open, "sel_seconds": t_sel, "rss_growth": rss_now() - rss0}


def main(argv: list[str]) -> None:
    name, params = argv[0], json.loads(argv[1])
    result = CASES[name](params)
    result["peak_rss"] = peak_rss()
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
