"""Prototype: what would make "1,000 scattered CpGs x all samples" cheap?  (Measured apart from the store.)

With the store's inner chunks of (1 row, 65,536 CpGs), 1,000 random CpGs out of 2 M
touch every inner chunk of every row, so they cost a full read.  Two ways out,
measured here on the same WGBS-like beta matrix (:func:`benchmarks.layout.generate`),
each array written the way the store appends (8-row shards, zstd 3) and read
by one small direct reader (pread + decode of the inner chunks that hold wanted
cells, two threads), so that layouts are compared and not readers:

* narrower inner chunks in the main array, ``(1, w)``: fewer bytes per
  scattered read, but more chunks per row (index, per-chunk overhead, worse
  compression) for every other read;
* a CpG-major companion array next to the main one, written in the same append
  (new shards only), inner chunks ``(8, w)``: a scattered read of few CpGs x many
  samples uses it; the main array stays as it is.  Costs: a second copy of beta
  on disk and its encoding in every append.

Usage::

    python -m benchmarks.scattered --samples 64 --cpgs 2000000 --out /tmp/scattered.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numcodecs
import numpy as np

#: (label, inner chunk) of the candidates; shards are always (8, SHARD_COLS) as in the store.
MAIN = ("main (1, 65536)", (1, 65536))
NARROW = [(f"narrow (1, {w})", (1, w)) for w in (8192, 2048, 512)]
COMPANION = [(f"companion (8, {w})", (8, w)) for w in (512, 128, 64)]
SHARD_ROWS, SHARD_COLS = 8, 2**21


def write(path: Path, beta: np.ndarray, chunk: tuple[int, int]) -> dict:
    """Write ``beta`` as the store appends it (one 8-row block at a time); time, bytes on disk, objects."""
    import zarr
    from zarr.codecs import ZstdCodec

    n_cpgs = beta.shape[1]
    shard_cols = min(SHARD_COLS, math.ceil(n_cpgs / chunk[1]) * chunk[1])
    arr = zarr.create_array(
        str(path),
        shape=(0, n_cpgs),
        dtype="float32",
        chunks=chunk,
        shards=(SHARD_ROWS, shard_cols),
        compressors=ZstdCodec(level=3),
        fill_value=np.nan,
    )
    t0 = time.perf_counter()
    for lo in range(0, beta.shape[0], SHARD_ROWS):
        arr.resize((lo + SHARD_ROWS, n_cpgs))
        arr[lo : lo + SHARD_ROWS] = beta[lo : lo + SHARD_ROWS]
    seconds = time.perf_counter() - t0
    files = [p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json"]
    return {
        "write_seconds": seconds,
        "bytes": sum(p.stat().st_size for p in files),
        "objects": len(files),
        "shard_cols": shard_cols,
    }


def write_direct(path: Path, beta: np.ndarray, chunk: tuple[int, int]) -> float:
    """The same array, each shard encoded here (numcodecs, two threads) and written as one object.

    What an append could cost if the companion's many small chunks were encoded
    without zarr-python 3.1's per-chunk overhead; the files are plain Zarr v3
    shards (chunks in order, then the index and its crc32c), read back by
    :class:`Reader` and checked by zarr in :func:`measure`.
    """
    import google_crc32c
    import zarr
    from zarr.codecs import ZstdCodec

    n_rows, n_cpgs = beta.shape
    ch, cw = chunk
    shard_cols = min(SHARD_COLS, math.ceil(n_cpgs / cw) * cw)
    zarr.create_array(
        str(path),
        shape=(n_rows, n_cpgs),
        dtype="float32",
        chunks=chunk,
        shards=(SHARD_ROWS, shard_cols),
        compressors=ZstdCodec(level=3),
        fill_value=np.nan,
    )
    codec = numcodecs.Zstd(level=3)
    grid = (SHARD_ROWS // ch, shard_cols // cw)

    def encode(block: np.ndarray, i: int, j0: int, j1: int) -> list[bytes | None]:
        out = []
        for j in range(j0, j1):
            piece = block[i * ch : (i + 1) * ch, j * cw : (j + 1) * cw]
            if piece.shape[1] < cw:
                piece = np.concatenate([piece, np.full((ch, cw - piece.shape[1]), np.nan, np.float32)], axis=1)
            out.append(None if np.isnan(piece).all() else codec.encode(np.ascontiguousarray(piece)))
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        for b in range(n_rows // SHARD_ROWS):
            for s in range(math.ceil(n_cpgs / shard_cols)):
                block = beta[b * SHARD_ROWS : (b + 1) * SHARD_ROWS, s * shard_cols : (s + 1) * shard_cols]
                n_chunks = math.ceil(block.shape[1] / cw)
                step = max(1, n_chunks // 8)
                parts = [
                    pool.submit(encode, block, i, j, min(j + step, n_chunks))
                    for i in range(grid[0])
                    for j in range(0, n_chunks, step)
                ]
                index = np.full((*grid, 2), 2**64 - 1, dtype="<u8")
                pieces, offset = [], 0
                for (i, j0), part in zip([(i, j) for i in range(grid[0]) for j in range(0, n_chunks, step)], parts):
                    for j, raw in enumerate(part.result(), start=j0):
                        if raw is not None:
                            index[i, j] = (offset, len(raw))
                            pieces.append(raw)
                            offset += len(raw)
                body = index.tobytes()
                target = path / "c" / str(b) / str(s)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"".join(pieces) + body + np.uint32(google_crc32c.value(body)).tobytes())
    return time.perf_counter() - t0


class Reader:
    """Reads (rows x columns) of an array written by :func:`write`: only the inner chunks holding wanted cells."""

    def __init__(self, path: Path, shape: tuple[int, int], chunk: tuple[int, int], shard_cols: int) -> None:
        self.path, self.shape, self.chunk, self.shard_cols = path, shape, chunk, shard_cols
        self.grid = (SHARD_ROWS // chunk[0], shard_cols // chunk[1])
        self.codec = numcodecs.Zstd()
        self.bytes_read = 0

    def read(self, cols: np.ndarray | None) -> np.ndarray:
        """All rows x ``cols`` (sorted; None: every column)."""
        n_rows, n_cols = self.shape
        width = n_cols if cols is None else len(cols)
        out = np.empty((n_rows, width), dtype=np.float32)
        shards = [(b, s) for b in range(n_rows // SHARD_ROWS) for s in range(math.ceil(n_cols / self.shard_cols))]
        self.bytes_read = 0
        with ThreadPoolExecutor(2) as pool:
            self.bytes_read = sum(pool.map(lambda bs: self._shard(*bs, cols, out), shards))
        return out

    def _shard(self, block: int, shard_col: int, cols: np.ndarray | None, out: np.ndarray) -> int:
        ch, cw = self.chunk
        base = shard_col * self.shard_cols
        stop = min(base + self.shard_cols, self.shape[1])
        if cols is None:
            chunks = range((stop - base + cw - 1) // cw)
        else:
            k0, k1 = np.searchsorted(cols, [base, stop])
            chunks = np.unique((cols[k0:k1] - base) // cw)
        fd = os.open(self.path / "c" / str(block) / str(shard_col), os.O_RDONLY)
        n = 0
        try:
            size = os.fstat(fd).st_size
            n_index = self.grid[0] * self.grid[1] * 16 + 4
            index = np.frombuffer(os.pread(fd, n_index, size - n_index)[:-4], "<u8").reshape(*self.grid, 2)
            n += n_index
            rows = slice(block * SHARD_ROWS, (block + 1) * SHARD_ROWS)
            chunks = np.asarray(chunks)
            if cols is not None:  # where each chunk's wanted columns start and end in cols, found at once
                bounds = np.searchsorted(cols, base + np.stack([chunks, chunks + 1]) * cw)
            values = np.empty((ch, cw), np.float32)
            for k, j in enumerate(chunks.tolist()):
                c0, c1 = base + j * cw, min(base + (j + 1) * cw, stop)
                for i in range(self.grid[0]):
                    offset, length = index[i, j].tolist()
                    if offset == 2**64 - 1:
                        values.fill(np.nan)
                    else:
                        raw = os.pread(fd, length, offset)
                        n += len(raw)
                        self.codec.decode(raw, out=values)
                    r = slice(rows.start + i * ch, rows.start + (i + 1) * ch)
                    if cols is None:
                        out[r, c0:c1] = values[:, : c1 - c0]
                    else:
                        ka, kb = bounds[0, k], bounds[1, k]
                        out[r, ka:kb] = values[:, cols[ka:kb] - c0]
        finally:
            os.close(fd)
        return n


def timed(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        value = None
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), value


def measure(args) -> dict:
    from benchmarks.layout import generate

    beta, _ = generate(args.samples, args.cpgs, seed=0)
    n_rows = beta.shape[0] // SHARD_ROWS * SHARD_ROWS
    beta = beta[:n_rows]
    cols = np.sort(np.random.default_rng(7).choice(args.cpgs, args.scattered, replace=False))
    one_row_cols = None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="xr-methyl-scattered-"))
    results: dict[str, dict] = {}
    try:
        for label, chunk in [MAIN, *NARROW, *COMPANION]:
            path = work / f"{chunk[0]}x{chunk[1]}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            entry = write(path, beta, chunk)
            if chunk[0] > 1:  # the companion written without zarr's per-chunk overhead, checked by zarr
                import zarr

                direct = work / f"direct-{chunk[0]}x{chunk[1]}.zarr"
                entry["direct_write_seconds"] = write_direct(direct, beta, chunk)
                check = zarr.open_array(str(direct), mode="r")
                assert np.array_equal(check[: SHARD_ROWS * 2], beta[: SHARD_ROWS * 2], equal_nan=True)
                shutil.rmtree(direct, ignore_errors=True)
            reader = Reader(path, beta.shape, chunk, entry["shard_cols"])
            seconds, some = timed(lambda r=reader: r.read(cols), args.repeats)
            assert np.array_equal(some, beta[:, cols], equal_nan=True)
            entry.update(scattered_seconds=seconds, scattered_bytes=reader.bytes_read)
            if chunk[0] == 1:  # the main array's other reads: the full matrix and one whole row
                seconds, full = timed(lambda r=reader: r.read(one_row_cols), args.repeats)
                assert np.array_equal(full, beta, equal_nan=True)
                entry.update(full_seconds=seconds, full_bytes=reader.bytes_read)
                del full
            results[label] = entry
            shutil.rmtree(path, ignore_errors=True)
            print(label, {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()}, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    main = results[MAIN[0]]
    for label, entry in results.items():
        entry["scattered_vs_main_full"] = entry["scattered_seconds"] / main["full_seconds"]
        entry["scattered_bytes_vs_main_full"] = entry["scattered_bytes"] / main["full_bytes"]
        entry["write_vs_main"] = entry["write_seconds"] / main["write_seconds"]
        if "direct_write_seconds" in entry:
            entry["direct_write_vs_main"] = entry["direct_write_seconds"] / main["write_seconds"]
        entry["bytes_vs_main"] = entry["bytes"] / main["bytes"]
        if "full_seconds" in entry:
            entry["full_vs_main"] = entry["full_seconds"] / main["full_seconds"]
    return {
        "samples": n_rows,
        "cpgs": args.cpgs,
        "scattered": args.scattered,
        "raw_bytes": beta.nbytes,
        "layouts": results,
    }


def markdown(report: dict) -> str:
    head = (
        "| layout | scattered read: time vs main full read | bytes vs full | full read vs main | write time | on disk |"
    )
    title = (
        f"{report['samples']} samples x {report['cpgs']:,} CpGs "
        f"(beta {report['raw_bytes'] / 2**20:,.0f} MiB raw), "
        f"{report['scattered']:,} scattered CpGs; shards (8, {SHARD_COLS}); companion rows add to the main "
        "array's write and disk."
    )
    lines = [title, "", head, "|---|---|---|---|---|---|"]
    for label, e in report["layouts"].items():
        full = f"{e['full_vs_main']:.2f}x ({e['full_seconds']:.2f} s)" if "full_vs_main" in e else "(main array)"
        lines.append(
            f"| {label} | {e['scattered_vs_main_full']:.3f}x ({e['scattered_seconds'] * 1000:.0f} ms) | "
            f"{e['scattered_bytes_vs_main_full']:.3f} ({e['scattered_bytes'] / 2**20:,.1f} MiB) | {full} | "
            f"{e['write_vs_main']:.2f}x ({e['write_seconds']:.1f} s)"
            + (f"; encoded directly {e['direct_write_vs_main']:.2f}x" if "direct_write_vs_main" in e else "")
            + f" | {e['bytes_vs_main']:.2f}x "
            f"({e['bytes'] / 2**20:,.0f} MiB, {e['objects']} objects) |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scattered", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--cpgs", type=int, default=2_000_000)
    parser.add_argument("--scattered", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir")
    parser.add_argument("--out", help="write the JSON report here (and the table next to it, .md)")
    args = parser.parse_args(argv)
    report = measure(args)
    text = markdown(report)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
        Path(args.out).with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
