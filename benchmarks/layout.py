"""Benchmark on-disk layouts for the wide methylation cache (Zarr v3, sharded).

Rows are samples, columns are CpG sites.  ``beta`` is float32 with NaN for
missing, ``coverage`` is uint16 with 0 for missing.

What is measured, for every candidate layout (shard shape / inner chunk shape):

* write: the whole matrix written the way the cache grows -- append-like, in
  blocks of 8 samples (or of the shard height when that is larger): resize the
  array, then write whole shards.  Wall time, bytes on disk, number of objects.
* reads of ``beta`` (wall time, bytes fetched from the store, number of GETs):
    - one row, all CpGs
    - (a)  ~50 random rows, all CpGs, as one orthogonal selection (``oindex``)
    - (a)  the same rows read as one basic slice per run of adjacent rows, all
           issued concurrently (zarr-python 3.1.x turns an integer-array
           ``oindex`` on a sharded array into per-element coordinate indexing
           inside each shard, zarr-python #3829 / #2834, which costs CPU in
           proportion to the number of elements selected)
    - (a') 8 rows, each in a different 8-row block, read as slices: what each
           sampled row costs when the cohort is large, so that sampled rows
           rarely share a shard
    - (b)  all rows x 50 contiguous CpGs
    - (b') all rows x one aligned 65,536-CpG window (one dask task of a
           feature-selection pass)
    - (c)  all rows x 1,000 scattered CpGs (sorted random)
    - (d)  the full matrix
  Reads run on a warm page cache (the files were just written), so local times
  mostly show decode cost.  The same reads are then repeated once against a
  store that adds a fixed latency to every GET, which is what an object store
  does to zarr-python 3.1.x (one range GET per inner chunk, one after another
  within a shard).
* append: 8 new samples onto the 64-row array.  Every existing chunk/shard
  file's inode, size and mtime is recorded before and compared after, so a
  rewritten shard shows up.

Then, for one layout (``--codec-layout``): zstd level 1 vs 3, with and without a
byte-shuffle filter, as raw numcodecs (ratio, single-thread encode/decode MiB/s
on that layout's inner chunks) and end to end through zarr.

Usage::

    python benchmarks/layout.py --samples 64 --cpgs 2000000 --out /tmp/layout.json

Bytes read are counted by ``CountingStore``: a ``LocalStore`` that tallies the
GET requests zarr makes and the bytes they return (a GET for a missing object
counts as a request returning 0 bytes, as a 404 would on S3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync
from zarr.storage import LocalStore

# zarr warns that numcodecs codecs (Shuffle) are not in the v3 spec; that is known.
warnings.filterwarnings("ignore", message=".*Numcodecs codecs are not in the Zarr version 3.*")

MiB = 1 << 20
C = None  # "the whole CpG axis" in a layout's shard shape

# number: (shard shape, inner chunk shape)
LAYOUTS: dict[int, tuple[tuple[int, int | None], tuple[int, int]]] = {
    1: ((8, C), (8, 32768)),
    2: ((8, C), (1, 32768)),
    3: ((1, C), (1, 32768)),
    4: ((8, 2**21), (8, 32768)),
    5: ((8, 2**21), (8, 8192)),
    6: ((8, 2**21), (1, 65536)),
    7: ((16, 2**21), (16, 16384)),
}

BETA_FILL = np.float32("nan")
COVERAGE_FILL = 0
APPEND_BLOCK = 8  # samples per ingest batch
DASK_WINDOW = 65536  # CpGs in one feature-selection task (pattern b')
# Reads timed once: the full matrix, and oindex on rows, whose cost is CPU in zarr's
# indexer (seconds per call); the latter is also left out of the latency pass.
SINGLE_RUN = {"d_full", "a_50_random_rows"}
CPU_BOUND = {"a_50_random_rows"}


# --------------------------------------------------------------------------- store


class CountingStore(LocalStore):
    """A LocalStore that counts GET requests and bytes returned, and can add latency per GET."""

    def __init__(self, root, *, read_only: bool = False, latency: float = 0.0, counts=None) -> None:
        super().__init__(root, read_only=read_only)
        self.latency = latency
        self.counts = counts if counts is not None else {"gets": 0, "bytes": 0}

    def with_read_only(self, read_only: bool = False):
        return type(self)(self.root, read_only=read_only, latency=self.latency, counts=self.counts)

    def reset(self) -> None:
        self.counts["gets"] = 0
        self.counts["bytes"] = 0

    async def get(self, key, prototype=None, byte_range=None):
        if self.latency:
            await asyncio.sleep(self.latency)
        buf = await super().get(key, prototype, byte_range)
        self.counts["gets"] += 1
        self.counts["bytes"] += 0 if buf is None else len(buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        if self.latency:
            await asyncio.sleep(self.latency)
        bufs = await super().get_partial_values(prototype, key_ranges)
        self.counts["gets"] += len(key_ranges)
        self.counts["bytes"] += sum(0 if b is None else len(b) for b in bufs)
        return bufs


# --------------------------------------------------------------------------- data


def generate(n_samples: int, n_cpgs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """WGBS-like beta and coverage matrices.

    Site methylation levels are shared across samples and come in runs of
    neighbouring CpGs (mostly methylated ~0.9, some unmethylated ~0.05, a few
    intermediate); each sample re-draws ~3 % of sites.  Read depth is Poisson
    around a per-sample mean of 5-20x, beta = methylated reads / depth (so
    values are discrete fractions, as in real WGBS).  Each sample also loses a
    random 5-30 % of sites (NaN beta, 0 coverage).
    """
    rng = np.random.default_rng(seed)
    # runs of correlated CpGs: state per run, level per site
    run_lengths = rng.geometric(1 / 30, size=n_cpgs // 10 + 10)
    states = rng.choice(3, size=run_lengths.size, p=[0.70, 0.20, 0.10])
    site_state = np.repeat(states, run_lengths)[:n_cpgs]
    levels = np.stack(
        [
            rng.beta(12, 1.5, size=n_cpgs),  # methylated
            rng.beta(1, 15, size=n_cpgs),  # unmethylated
            rng.uniform(0.2, 0.8, size=n_cpgs),  # intermediate
        ]
    )
    site_level = levels[site_state, np.arange(n_cpgs)]
    del levels

    beta = np.empty((n_samples, n_cpgs), dtype=np.float32)
    coverage = np.empty((n_samples, n_cpgs), dtype=np.uint16)
    for i in range(n_samples):
        p = site_level.copy()
        redraw = rng.random(n_cpgs) < 0.03
        p[redraw] = rng.random(int(redraw.sum()))
        depth = rng.poisson(rng.uniform(5, 20), size=n_cpgs)
        missing = (rng.random(n_cpgs) < rng.uniform(0.05, 0.30)) | (depth == 0)
        depth[missing] = 0
        methylated = rng.binomial(depth, p)
        with np.errstate(invalid="ignore", divide="ignore"):
            beta[i] = methylated / depth
        beta[i, missing] = np.nan
        coverage[i] = np.minimum(depth, np.iinfo(np.uint16).max)
    return beta, coverage


# --------------------------------------------------------------------------- helpers


def shard_and_chunk(layout: int, n_cpgs: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Concrete shapes; a whole-axis shard is rounded up to a multiple of the inner chunk."""
    (shard_h, shard_w), chunk = LAYOUTS[layout]
    if shard_w is None:
        shard_w = math.ceil(n_cpgs / chunk[1]) * chunk[1]
    return (shard_h, shard_w), chunk


def layout_label(layout: int) -> str:
    (sh, sw), (ch, cw) = LAYOUTS[layout]
    sw_s = "C" if sw is None else f"2**{int(math.log2(sw))}"
    return f"{layout}. ({sh}, {sw_s}) / ({ch}, {cw})"


def create(path: Path, n_cpgs: int, dtype, fill, shards, chunks, compressors) -> zarr.Array:
    store = CountingStore(path)
    return zarr.create_array(
        store,
        shape=(0, n_cpgs),
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
        fill_value=fill,
        dimension_names=("sample", "cpg"),
        overwrite=True,
    )


def pad_rows(block: np.ndarray, height: int, fill) -> np.ndarray:
    if block.shape[0] == height:
        return block
    pad = np.full((height - block.shape[0], block.shape[1]), fill, dtype=block.dtype)
    return np.concatenate([block, pad])


def append_rows(arr: zarr.Array, rows: np.ndarray, fill) -> int:
    """Append like the cache does: pad to whole shards, resize, write.  Returns rows written."""
    shard_h = arr.shards[0]
    height = math.ceil(rows.shape[0] / shard_h) * shard_h
    n = arr.shape[0]
    arr.resize((n + height, arr.shape[1]))
    arr[n : n + height] = pad_rows(rows, height, fill)
    return height


def write_append_like(arr: zarr.Array, data: np.ndarray, fill) -> None:
    block = math.lcm(APPEND_BLOCK, arr.shards[0])
    for start in range(0, data.shape[0], block):
        append_rows(arr, data[start : start + block], fill)


def file_stats(path: Path) -> dict[str, tuple[int, int, int]]:
    """inode, size and mtime of every chunk/shard object (metadata excluded)."""
    out = {}
    for p in path.rglob("*"):
        if p.is_file() and p.name != "zarr.json":
            st = p.stat()
            out[str(p.relative_to(path))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def disk_usage(path: Path) -> tuple[int, int]:
    stats = file_stats(path)
    return sum(s[1] for s in stats.values()), len(stats)


def timed(fn, store: CountingStore, repeats: int) -> dict:
    """Median wall time of ``fn`` over ``repeats`` runs; GETs and bytes of the last run."""
    times = []
    for _ in range(repeats):
        store.reset()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "bytes_read": store.counts["bytes"], "gets": store.counts["gets"]}


def oindex(a, rows, cols):
    """Orthogonal selection on a zarr array, or the numpy equivalent (to check results)."""
    if isinstance(a, np.ndarray):
        return a[np.ix_(np.arange(a.shape[0])[rows], np.arange(a.shape[1])[cols])]
    return a.oindex[rows, cols]


def read_rows_sliced(a, rows: np.ndarray) -> np.ndarray:
    """Sorted rows, all columns, without ``oindex``: the reader the cache would use.

    Rows are grouped by inner-chunk row block (``row // chunk height``); each
    group is read as one basic slice from its first to its last row, and all
    slices are issued concurrently.  With 1-row inner chunks that is one slice
    per row; with 8-row inner chunks each block of 8 is fetched once, however
    many of its rows are wanted.
    """
    if isinstance(a, np.ndarray):
        return a[rows]
    height = a.chunks[0]  # inner chunk height
    groups = np.split(rows, np.flatnonzero(np.diff(rows // height)) + 1)

    async def gather():
        aa = a.async_array
        return await asyncio.gather(*(aa.getitem((slice(int(g[0]), int(g[-1]) + 1), slice(None))) for g in groups))

    parts = sync(gather())
    return np.concatenate([part[g - g[0]] for part, g in zip(parts, groups)])


def read_patterns(n_rows: int, n_cpgs: int, seed: int = 1) -> dict[str, callable]:
    """The read patterns, as functions of an array (same selections for every layout)."""
    rng = np.random.default_rng(seed)
    row = n_rows // 2 + 5 if n_rows > 10 else 0
    rows50 = np.sort(rng.choice(n_rows, size=min(50, n_rows), replace=False))
    rows_spread = np.arange(APPEND_BLOCK // 2, n_rows, APPEND_BLOCK)  # one per 8-row block
    w0 = int(rng.integers(0, n_cpgs - 50))
    k = int(rng.integers(0, max(1, n_cpgs // DASK_WINDOW)))
    window = slice(k * DASK_WINDOW, min(n_cpgs, (k + 1) * DASK_WINDOW))
    scattered = np.sort(rng.choice(n_cpgs, size=min(1000, n_cpgs), replace=False))
    return {
        "one_row": lambda a: a[row, :],
        "a_50_random_rows": lambda a: oindex(a, rows50, slice(None)),
        "a_50_random_rows_sliced": lambda a: read_rows_sliced(a, rows50),
        "a2_8_rows_distinct_blocks_sliced": lambda a: read_rows_sliced(a, rows_spread),
        "b_50_contiguous_cpgs": lambda a: a[:, w0 : w0 + 50],
        "b2_dask_window_65536": lambda a: a[:, window],
        "c_1000_scattered_cpgs": lambda a: oindex(a, slice(None), scattered),
        "d_full": lambda a: a[:],
    }


def sync_time() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- per layout


def bench_layout(layout, beta, coverage, workdir: Path, args) -> dict:
    n_rows, n_cpgs = beta.shape
    shards, chunks = shard_and_chunk(layout, n_cpgs)
    compressors = [ZstdCodec(level=args.zstd_level)]
    result = {"layout": layout, "label": layout_label(layout), "shards": shards, "chunks": chunks}
    base = workdir / f"layout{layout}"
    shutil.rmtree(base, ignore_errors=True)

    # -- write, append-like, beta then coverage
    for name, data, fill in (("beta", beta, BETA_FILL), ("coverage", coverage, COVERAGE_FILL)):
        arr = create(base / name, n_cpgs, data.dtype, fill, shards, chunks, compressors)
        arr.store.reset()
        t0 = time.perf_counter()
        write_append_like(arr, data, fill)
        seconds = time.perf_counter() - t0
        size, objects = disk_usage(base / name)
        result[f"write_{name}"] = {
            "seconds": seconds,
            "sync_seconds": sync_time(),
            "bytes_on_disk": size,
            "objects": objects,
            "raw_bytes": data.nbytes,
            "gets_during_write": arr.store.counts["gets"],
            "bytes_read_during_write": arr.store.counts["bytes"],
        }

    # -- reads of beta, warm page cache
    patterns = read_patterns(n_rows, n_cpgs)
    store = CountingStore(base / "beta")
    arr = zarr.open_array(store, mode="r")
    stored = arr[:]  # the layout round-trips the data (plus NaN padding rows if any)
    np.testing.assert_array_equal(stored[:n_rows], beta)
    assert np.isnan(stored[n_rows:]).all()
    del stored
    result["reads"] = {}
    for name, fn in patterns.items():
        reps = 1 if name in SINGLE_RUN else args.repeats
        result["reads"][name] = timed(lambda: fn(arr), store, reps)
    if n_rows == arr.shape[0]:  # every pattern returns what numpy returns on the source matrix
        for name, fn in patterns.items():
            if name != "a_50_random_rows":  # same rows as the sliced read; too slow to run twice
                np.testing.assert_array_equal(fn(arr), fn(beta), err_msg=name)

    # -- the same reads with a fixed latency per GET (object-store-like), once each
    if args.latency_ms > 0:
        slow = CountingStore(base / "beta", latency=args.latency_ms / 1000)
        slow_arr = zarr.open_array(slow, mode="r")
        result["reads_latency"] = {
            name: timed(lambda: fn(slow_arr), slow, 1) for name, fn in patterns.items() if name not in CPU_BOUND
        }

    # -- append 8 samples onto the 64-row array: no existing object may change
    before = file_stats(base / "beta")
    arr = zarr.open_array(CountingStore(base / "beta"), mode="r+")
    before_rows = arr.shape[0]
    arr.store.reset()
    new_rows = beta[:APPEND_BLOCK][:, ::-1].copy()  # any 8 rows of plausible data
    t0 = time.perf_counter()
    written = append_rows(arr, new_rows, BETA_FILL)
    seconds = time.perf_counter() - t0
    after = file_stats(base / "beta")
    changed = [k for k, v in before.items() if after.get(k) != v]
    new = [k for k in after if k not in before]
    result["append_8"] = {
        "seconds": seconds,
        "rows_written_incl_padding": written,
        "padding_rows": written - APPEND_BLOCK,
        "new_objects": len(new),
        "bytes_written": sum(after[k][1] for k in new),
        "existing_objects_changed": len(changed),
        "existing_objects_checked": len(before),
        "gets": arr.store.counts["gets"],
        "bytes_read": arr.store.counts["bytes"],
    }
    np.testing.assert_array_equal(arr[before_rows : before_rows + APPEND_BLOCK], new_rows)

    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- codecs


CODECS = {
    "zstd 1": lambda es: [numcodecs.Zstd(level=1)],
    "zstd 3": lambda es: [numcodecs.Zstd(level=3)],
    "shuffle + zstd 1": lambda es: [numcodecs.Shuffle(elementsize=es), numcodecs.Zstd(level=1)],
    "shuffle + zstd 3": lambda es: [numcodecs.Shuffle(elementsize=es), numcodecs.Zstd(level=3)],
}


def zarr_compressors(name: str, itemsize: int):
    shuffle = [zarr.codecs.Shuffle(elementsize=itemsize)] if name.startswith("shuffle") else []
    return shuffle + [ZstdCodec(level=int(name[-1]))]


def inner_chunks(data: np.ndarray, chunk: tuple[int, int], max_bytes: int) -> list[np.ndarray]:
    """Inner chunks of ``data`` in storage order, up to ``max_bytes`` of them."""
    out, total = [], 0
    for r in range(0, data.shape[0] - chunk[0] + 1, chunk[0]):
        for c in range(0, data.shape[1] - chunk[1] + 1, chunk[1]):
            block = np.ascontiguousarray(data[r : r + chunk[0], c : c + chunk[1]])
            out.append(block)
            total += block.nbytes
            if total >= max_bytes:
                return out
    return out


def bench_codecs_raw(data: np.ndarray, chunk, repeats: int) -> dict:
    """numcodecs, one thread: ratio and MiB/s (of raw bytes) over the layout's inner chunks."""
    blocks = inner_chunks(data, chunk, 64 * MiB)
    raw = sum(b.nbytes for b in blocks)
    res = {"raw_bytes": raw, "n_chunks": len(blocks)}
    for name, make in CODECS.items():
        pipeline = make(data.dtype.itemsize)

        def encode(b):
            for c in pipeline:
                b = c.encode(b)
            return bytes(b)

        def decode(b):
            for c in reversed(pipeline):
                b = c.decode(b)
            return b

        enc_t, dec_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            encoded = [encode(b) for b in blocks]
            enc_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            decoded = [decode(e) for e in encoded]
            dec_t.append(time.perf_counter() - t0)
        assert np.array_equal(np.frombuffer(decoded[0], dtype=data.dtype), blocks[0].ravel(), equal_nan=True)
        comp = sum(len(e) for e in encoded)
        res[name] = {
            "ratio": raw / comp,
            "encode_MiBps": raw / MiB / min(enc_t),
            "decode_MiBps": raw / MiB / min(dec_t),
        }
    return res


def bench_codecs_zarr(layout, beta, coverage, workdir: Path, args) -> dict:
    """End to end through zarr in one layout: write time, size, full read and 50-row read."""
    n_rows, n_cpgs = beta.shape
    shards, chunks = shard_and_chunk(layout, n_cpgs)
    patterns = read_patterns(n_rows, n_cpgs)
    res = {}
    for cname in CODECS:
        entry = {}
        for name, data, fill in (("beta", beta, BETA_FILL), ("coverage", coverage, COVERAGE_FILL)):
            path = workdir / "codecs" / name
            shutil.rmtree(path, ignore_errors=True)
            arr = create(path, n_cpgs, data.dtype, fill, shards, chunks, zarr_compressors(cname, data.dtype.itemsize))
            t0 = time.perf_counter()
            write_append_like(arr, data, fill)
            entry[f"{name}_write_seconds"] = time.perf_counter() - t0
            entry[f"{name}_bytes_on_disk"] = disk_usage(path)[0]
            if name == "beta":
                store = CountingStore(path)
                ro = zarr.open_array(store, mode="r")
                entry["beta_full_read_seconds"] = timed(lambda: patterns["d_full"](ro), store, 1)["seconds"]
                read_a = patterns["a_50_random_rows_sliced"]
                entry["beta_a_50_rows_seconds"] = timed(lambda: read_a(ro), store, args.repeats)["seconds"]
            shutil.rmtree(path, ignore_errors=True)
        res[cname] = entry
    return res


# --------------------------------------------------------------------------- report


def mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def markdown(report: dict) -> str:
    lines = []
    p = report["params"]
    lines.append(
        f"### {p['samples']} samples x {p['cpgs']:,} CpGs, zstd {p['zstd_level']}, "
        f"beta raw {mib(report['raw_beta_bytes'])} MiB, NaN {report['nan_fraction']:.1%}\n"
    )
    lines.append("Write (append-like, whole shards) and size:\n")
    lines.append(
        "| layout | beta write s | beta MiB on disk | ratio | objects | coverage write s | coverage MiB | "
        "GETs while writing (bytes) | append 8: s / new objs / MiB written / pad rows / existing changed |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for r in report["layouts"]:
        wb, wc, ap = r["write_beta"], r["write_coverage"], r["append_8"]
        lines.append(
            f"| {r['label']} | {wb['seconds']:.2f} | {mib(wb['bytes_on_disk'])} | "
            f"{wb['raw_bytes'] / wb['bytes_on_disk']:.2f} | {wb['objects']} | {wc['seconds']:.2f} | "
            f"{mib(wc['bytes_on_disk'])} | {wb['gets_during_write']} ({wb['bytes_read_during_write']} B) | "
            f"{ap['seconds']:.2f} / {ap['new_objects']} / {mib(ap['bytes_written'])} / {ap['padding_rows']} / "
            f"{ap['existing_objects_changed']} of {ap['existing_objects_checked']} |"
        )
    names = list(report["layouts"][0]["reads"])
    for key, title in (("reads", "Reads of beta, warm page cache: ms / MiB fetched / GETs"),):
        lines.append(f"\n{title}:\n")
        lines.append("| layout | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for r in report["layouts"]:
            cells = [f"{v['seconds'] * 1000:.0f} / {mib(v['bytes_read'])} / {v['gets']}" for v in r[key].values()]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    if "reads_latency" in report["layouts"][0]:
        lines.append(f"\nSame reads with {p['latency_ms']} ms added to every GET (one run): seconds\n")
        lines.append("| layout | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for r in report["layouts"]:
            cells = [f"{r['reads_latency'][n]['seconds']:.2f}" if n in r["reads_latency"] else "-" for n in names]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    if "codecs" in report:
        c = report["codecs"]
        lines.append(f"\nCodecs in layout {layout_label(c['layout'])}; numcodecs, one thread, inner chunks:\n")
        lines.append(
            "| codec | beta ratio | beta enc MiB/s | beta dec MiB/s | cov ratio | cov enc MiB/s | cov dec MiB/s |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name in CODECS:
            b, v = c["raw_beta"][name], c["raw_coverage"][name]
            lines.append(
                f"| {name} | {b['ratio']:.2f} | {b['encode_MiBps']:.0f} | {b['decode_MiBps']:.0f} | "
                f"{v['ratio']:.2f} | {v['encode_MiBps']:.0f} | {v['decode_MiBps']:.0f} |"
            )
        lines.append("\nSame codecs end to end through zarr:\n")
        lines.append(
            "| codec | beta write s | beta MiB | beta full read s | beta (a) 50 rows sliced s | coverage write s "
            "| coverage MiB |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, e in c["zarr"].items():
            lines.append(
                f"| {name} | {e['beta_write_seconds']:.2f} | {mib(e['beta_bytes_on_disk'])} | "
                f"{e['beta_full_read_seconds']:.2f} | {e['beta_a_50_rows_seconds']:.2f} | "
                f"{e['coverage_write_seconds']:.2f} | {mib(e['coverage_bytes_on_disk'])} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--cpgs", type=int, default=2_000_000)
    ap.add_argument("--out", default="/tmp/layout.json")
    ap.add_argument("--workdir", default="/tmp/layout_bench", help="where the arrays are written")
    ap.add_argument("--layouts", default=",".join(map(str, LAYOUTS)), help="comma-separated layout numbers")
    ap.add_argument("--zstd-level", type=int, default=3, help="codec for the layout comparison")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of each read (median); see SINGLE_RUN")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="latency per GET for the second read pass; 0 = skip")
    ap.add_argument("--codec-layout", type=int, default=6, help="layout for the codec comparison; 0 = skip")
    ap.add_argument("--keep", action="store_true", help="keep the arrays under --workdir")
    args = ap.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    beta, coverage = generate(args.samples, args.cpgs)
    print(f"generated {beta.shape} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    report = {
        "params": vars(args),
        "versions": {
            "python": platform.python_version(),
            "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
        },
        "raw_beta_bytes": beta.nbytes,
        "nan_fraction": float(np.isnan(beta).mean()),
        "layouts": [],
    }
    for layout in (int(x) for x in args.layouts.split(",")):
        t0 = time.perf_counter()
        report["layouts"].append(bench_layout(layout, beta, coverage, workdir, args))
        print(f"layout {layout_label(layout)} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    if args.codec_layout:
        _, chunk = shard_and_chunk(args.codec_layout, args.cpgs)
        report["codecs"] = {
            "layout": args.codec_layout,
            "raw_beta": bench_codecs_raw(beta, chunk, args.repeats),
            "raw_coverage": bench_codecs_raw(coverage, chunk, args.repeats),
            "zarr": bench_codecs_zarr(args.codec_layout, beta, coverage, workdir, args),
        }

    report["total_seconds"] = time.perf_counter() - t_start
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))
    print(f"\ntotal {report['total_seconds']:.0f} s; JSON in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
