"""Run every comparison of the performance targets side by side; write JSON and a markdown table.

    python -m benchmarks.run            # the reference sizes (about 25 minutes, < 9 GiB per case)
    python -m benchmarks.run --quick    # the same comparisons, small (a couple of minutes)

Each measurement runs in a fresh process (:mod:`benchmarks.cases`), so its peak
RSS and its cold start are its own; ratios compare figures of the same run.
Cached reads and appends are repeated in their process: the median of the
repeats counts, the first run (with its one-off costs) is shown beside it.
The two appends share one process and take turns.
Results go to ``benchmarks/results/`` (``--out``): ``results.json`` and
``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: The sizes the targets refer to, a quick one and a tiny one (for the test that keeps this working).
#: ``max_memory_mb`` is what the wide blocks of one 8-sample batch take (8 rows x one CpG shard x 8 bytes
#: a cell), so that the 8- and the 32-sample batch are both held to the budget; with a larger budget the
#: 32-sample batch rightly uses more of it than the 8-sample one can.
SIZES: dict[str, dict[str, int]] = {
    "default": {
        "cpgs": 2_000_000,
        "warehouse_samples": 56,
        "ingest_samples": 32,
        "read_rows": 256,
        "read_samples": 50,
        "scattered": 1000,
        "append_batches": 64,
        "index_cpgs": 28_000_000,
        "sel": 5000,
        "max_memory_mb": 128,
    },
    "quick": {
        "cpgs": 200_000,
        "warehouse_samples": 56,
        "ingest_samples": 32,
        "read_rows": 256,
        "read_samples": 50,
        "scattered": 1000,
        "append_batches": 64,
        "index_cpgs": 2_000_000,
        "sel": 5000,
        "max_memory_mb": 16,
    },
    "tiny": {
        "cpgs": 5_000,
        "warehouse_samples": 24,
        "ingest_samples": 16,
        "read_rows": 32,
        "read_samples": 10,
        "scattered": 100,
        "append_batches": 3,
        "index_cpgs": 50_000,
        "sel": 500,
        "max_memory_mb": 1,
    },
}


def run_case(name: str, params: dict[str, Any], log) -> dict[str, Any]:
    """Run one case in a fresh interpreter; return its JSON result (or the error)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.cases", name, json.dumps(params)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        log(f"  {name}: FAILED ({proc.returncode}): {' | '.join(tail)}")
        return {"error": "\n".join(tail)}
    result = json.loads(lines[-1][len("RESULT ") :])
    log(f"  {name}: {time.perf_counter() - t0:.1f} s wall, peak RSS {result['peak_rss'] / 2**20:.0f} MiB")
    return result


def measure(size: str, work: Path, log) -> dict[str, Any]:
    z = SIZES[size]
    # Records of checked CpG axis files (see xr_methyl.store.cpg_axis.check_files) stay with the run's data.
    os.environ["XR_METHYL_CACHE"] = str(work / "xr-methyl-cache")
    budget = z["max_memory_mb"] << 20
    wh = str(work / "warehouse")
    wh32 = str(work / "warehouse-32")
    r: dict[str, Any] = {}

    log("building data")
    r["build_warehouse"] = run_case(
        "build_warehouse",
        {"path": wh, "samples": z["warehouse_samples"], "cpgs": z["cpgs"], "batch_size": 8, "seed": 1},
        log,
    )
    all_ids = [s for b in r["build_warehouse"]["batches"].values() for s in b]
    ingest_ids = all_ids[: z["ingest_samples"]]
    # The same 32 samples as one 32-sample batch, for the memory comparison.
    r["build_warehouse_32"] = run_case(
        "build_one_batch_warehouse", {"path": wh32, "source": wh, "samples": all_ids[:32]}, log
    )

    log("ingest")
    common = {"warehouse": wh, "samples": ingest_ids}
    r["ingest"] = run_case("ingest", {**common, "store": str(work / "ingest.methyl.zarr")}, log)
    r["pivot"] = run_case("pivot", common, log)
    r["decode"] = run_case("decode", common, log)
    r["ingest_dask"] = run_case("ingest", {**common, "store": str(work / "ingest-dask.methyl.zarr"), "workers": 2}, log)
    r["ingest_batch8"] = run_case(
        "ingest",
        {"warehouse": wh, "samples": all_ids[:8], "max_memory": budget, "store": str(work / "batch8.methyl.zarr")},
        log,
    )
    ids32 = [s for b in r["build_warehouse_32"]["batches"].values() for s in b]
    r["ingest_batch32"] = run_case(
        "ingest",
        {"warehouse": wh32, "samples": ids32, "max_memory": budget, "store": str(work / "batch32.methyl.zarr")},
        log,
    )
    for name in ("ingest.methyl.zarr", "ingest-dask.methyl.zarr", "batch8.methyl.zarr", "batch32.methyl.zarr"):
        shutil.rmtree(work / name, ignore_errors=True)

    log("reads")
    read_store = str(work / "read.methyl.zarr")
    # The read store keeps the CpG-major copy of beta; its twin, a default store with the same
    # appends, times what the copy adds to an append (then goes).
    twin = str(work / "read-twin.methyl.zarr")
    r["build_read_store"] = run_case(
        "build_read_store",
        {
            "warehouse": wh,
            "store": read_store,
            "samples": all_ids,
            "rows": z["read_rows"],
            "by_cpg_chunk": 64,
            "twin": twin,
        },
        log,
    )
    shutil.rmtree(twin, ignore_errors=True)
    # Requested in a shuffled order, spread over the store's blocks.
    import random

    wanted = random.Random(3).sample(all_ids, z["read_samples"])
    reads = {"warehouse": wh, "store": read_store, "samples": wanted}
    r["read_ensure"] = run_case("read_ensure", reads, log)
    r["read_zarr"] = run_case("read_zarr", reads, log)
    r["read_cpgs"] = run_case("read_cpgs", {"store": read_store, "n": z["scattered"]}, log)
    # The pivot last: its memory pushes the store's files out of the page cache.
    r["read_pivot"] = run_case("read_pivot", reads, log)
    shutil.rmtree(read_store, ignore_errors=True)
    # The same store with the copy's chunks stored raw (by_cpg_codec="raw"), for the scattered read alone.
    raw_store = str(work / "read-raw.methyl.zarr")
    r["build_read_store_raw"] = run_case(
        "build_read_store",
        {
            "warehouse": wh,
            "store": raw_store,
            "samples": all_ids,
            "rows": z["read_rows"],
            "by_cpg_chunk": 64,
            "by_cpg_codec": "raw",
        },
        log,
    )
    r["read_cpgs_raw"] = run_case("read_cpgs", {"store": raw_store, "n": z["scattered"]}, log)
    shutil.rmtree(raw_store, ignore_errors=True)

    log("appends")
    paths = {n: str(work / f"append{n}.methyl.zarr") for n in (1, z["append_batches"])}
    for n, path in paths.items():
        r[f"build_append_{n}"] = run_case(
            "build_append_store", {"store": path, "cpgs": z["cpgs"], "batches": n, "width": min(32768, z["cpgs"])}, log
        )
    # Both stores in one process, taking turns: the comparison is side by side.
    appended = run_case("append", {"stores": list(paths.values())}, log)
    for n, path in paths.items():
        r[f"append_{n}"] = {**_get(appended, "stores", path, default={}), "peak_rss": appended.get("peak_rss")}
        shutil.rmtree(path, ignore_errors=True)

    log("open / index")
    index_store = str(work / "index.methyl.zarr")
    r["build_index_store"] = run_case("build_index_store", {"store": index_store, "cpgs": z["index_cpgs"]}, log)
    q = {"store": index_store, "cpgs": z["index_cpgs"], "n": z["sel"]}
    r["open_index_first"] = run_case("open_index", q, log)  # hashes the axis files and records them
    r["open_index"] = run_case("open_index", q, log)  # what every later open costs
    r["open_pandas"] = run_case("open_pandas", q, log)
    return r


# ----------------------------------------------------------------------------- report


def _get(r: dict, *path, default=None):
    for key in path:
        if not isinstance(r, dict) or key not in r:
            return default
        r = r[key]
    return r


def first(r: dict, key: str):
    """The first of a case's repeated timings (None when missing)."""
    runs = _get(r, key)
    return runs[0] if runs else None


def rows(r: dict[str, Any], z: dict[str, int]) -> list[dict[str, str]]:
    """The table: one row per target, ratio first, absolute figures and peak RSS beside it."""

    def ratio(a, b):
        return None if a is None or b is None or not b else a / b

    def s(x):
        return "n/a" if x is None else f"{x:.3g} s" if x >= 0.1 else f"{x * 1000:.3g} ms"

    def mb(x):
        if x is None:
            return "n/a"
        return f"{x / 2**20:,.0f} MiB" if abs(x) >= 10 << 20 else f"{x / 2**10:,.0f} KiB"

    def grown(case):
        peak, before = _get(case, "peak_rss"), _get(case, "rss_before")
        return "n/a" if peak is None or before is None else f"+{mb(peak - before)}"

    def rps(x):
        return "n/a" if x is None else f"{x / 1e6:.2f} M rows/s"

    def fmt(x, target, better):
        if x is None:
            return "n/a", "n/a"
        met = x >= target if better == "higher" else x <= target
        return f"{x:.2f}x", "met" if met else "NOT met"

    out = []

    def add(what, value, target_text, target, better, ours, base):
        shown, met = fmt(value, target, better)
        out.append({"what": what, "ratio": shown, "target": target_text, "met": met, "ours": ours, "baseline": base})

    ing, piv, dec, dsk = r.get("ingest", {}), r.get("pivot", {}), r.get("decode", {}), r.get("ingest_dask", {})
    rows_s = ingest_rows = _get(ing, "rows_per_s")
    add(
        "ingest throughput (long rows/s) vs DuckDB PIVOT of both tables",
        ratio(rows_s, _get(piv, "rows_per_s")),
        ">= 1.5x",
        1.5,
        "higher",
        f"{rps(rows_s)}, {s(_get(ing, 'seconds'))}, peak {mb(_get(ing, 'peak_rss'))}",
        f"{rps(_get(piv, 'rows_per_s'))}, {s(_get(piv, 'seconds'))}, peak {mb(_get(piv, 'peak_rss'))}",
    )
    add(
        "ingest throughput vs merely decoding the same Parquet columns",
        ratio(rows_s, _get(dec, "rows_per_s")),
        "(report)",
        0,
        "higher",
        f"{rps(rows_s)}",
        f"{rps(_get(dec, 'rows_per_s'))}, {s(_get(dec, 'seconds'))}, peak {mb(_get(dec, 'peak_rss'))}",
    )
    ens, zr, rp = r.get("read_ensure", {}), r.get("read_zarr", {}), r.get("read_pivot", {})
    add(
        f"cached read: ensure {z['read_samples']} + .beta.values, speed-up over DuckDB pivot from the warehouse",
        ratio(_get(rp, "seconds"), _get(ens, "seconds")),
        ">= 30x",
        30,
        "higher",
        f"{s(_get(ens, 'seconds'))} (first run {s(_get(ens, 'first_seconds'))}), peak {mb(_get(ens, 'peak_rss'))}",
        f"{s(_get(rp, 'seconds'))}, peak {mb(_get(rp, 'peak_rss'))}",
    )
    ways = ", ".join(f"{k} {s(_get(v, 'seconds'))}" for k, v in (_get(zr, "ways") or {}).items())
    add(
        "same cached read, time vs zarr-python reading the same rows (its fastest way)",
        ratio(_get(ens, "seconds"), _get(zr, "seconds")),
        "<= 1.2x",
        1.2,
        "lower",
        f"{s(_get(ens, 'seconds'))}",
        f"{s(_get(zr, 'seconds'))} (first run {s(_get(zr, 'first_seconds'))}; {ways}), peak {mb(_get(zr, 'peak_rss'))}",
    )
    twin_append = _get(r, "build_read_store", "twin_append_seconds")
    for codec, rc, brs in (
        ("zstd", r.get("read_cpgs", {}), r.get("build_read_store", {})),
        ("raw", r.get("read_cpgs_raw", {}), r.get("build_read_store_raw", {})),
    ):
        main_ratio = ratio(_get(rc, "main_scattered_seconds"), _get(rc, "full_seconds"))
        copy_bytes = ratio(_get(brs, "bytes", "beta_by_cpg"), _get(brs, "bytes", "beta"))
        append_extra = ratio(_get(brs, "append_seconds"), twin_append)
        add(
            f"{z['scattered']:,} scattered CpGs x all {z['read_rows']} samples, time vs full-matrix read "
            f"(store with Layout(by_cpg_chunk=64, by_cpg_codec={codec!r}))",
            ratio(_get(rc, "scattered_seconds"), _get(rc, "full_seconds")),
            "<= 0.1x",
            0.1,
            "lower",
            f"{s(_get(rc, 'scattered_seconds'))} (first run {s(first(rc, 'scattered_all_seconds'))}), "
            f"{mb(_get(rc, 'scattered_bytes'))} read; beta alone (a default store): "
            f"{'n/a' if main_ratio is None else f'{main_ratio:.2f}x'}, "
            f"{s(_get(rc, 'main_scattered_seconds'))}, {mb(_get(rc, 'main_scattered_bytes'))} read; the copy: "
            f"{mb(_get(brs, 'bytes', 'beta_by_cpg'))} on disk ("
            + ("n/a" if copy_bytes is None else f"{copy_bytes:.2f}x beta's")
            + "), append "
            f"{s(_get(brs, 'append_seconds'))} vs {s(twin_append)} without it ("
            + ("n/a" if append_extra is None else f"{append_extra:.2f}x")
            + ")",
            f"{s(_get(rc, 'full_seconds'))} (first run {s(first(rc, 'full_all_seconds'))}), "
            f"{mb(_get(rc, 'full_bytes'))} read, peak {mb(_get(rc, 'peak_rss'))}",
        )
    big, one = r.get(f"append_{z['append_batches']}", {}), r.get("append_1", {})
    touched = None if not big else big.get("existing_shard_bytes_read", 0) + big.get("existing_shards_rewritten", 0)
    add(
        f"append one 8-sample batch to a store of {z['append_batches']} batches vs to a store of 1",
        ratio(_get(big, "seconds"), _get(one, "seconds")),
        "<= 1.2x, 0 bytes of existing shards",
        1.2,
        "lower",
        f"{s(_get(big, 'seconds'))}; existing shards: {_get(big, 'existing_shard_bytes_read')} bytes read, "
        f"{_get(big, 'existing_shards_rewritten')} rewritten" + ("" if touched == 0 else " (NOT 0)"),
        f"{s(_get(one, 'seconds'))}",
    )
    oi, op, first_open = r.get("open_index", {}), r.get("open_pandas", {}), r.get("open_index_first", {})
    add(
        f"xr.open_dataset of the {z['index_cpgs']:,}-CpG store, time vs a plain PandasIndex",
        ratio(_get(oi, "open_seconds"), _get(op, "open_seconds")),
        "open <= 1 s, <= 500 MB",
        0,
        "lower",
        f"{s(_get(oi, 'open_seconds'))}, RSS +{mb(_get(oi, 'open_rss_growth'))} (the first open, which hashes the "
        f"axis files: {s(_get(first_open, 'open_seconds'))}, RSS +{mb(_get(first_open, 'open_rss_growth'))})",
        f"{s(_get(op, 'open_seconds'))}, RSS +{mb(_get(op, 'open_rss_growth'))}",
    )
    out[-1]["met"] = (
        "met"
        if (_get(oi, "open_seconds") or 9e9) <= 1 and (_get(oi, "open_rss_growth") or 9e18) <= 500e6
        else "NOT met"
    )
    add(
        f".sel(cpg=<{z['sel']:,} ids>) on it, time vs the PandasIndex's first .sel",
        ratio(_get(oi, "sel_seconds"), _get(op, "sel_seconds")),
        "<= 50 ms",
        0,
        "lower",
        f"{s(_get(oi, 'sel_seconds'))}; region select {s(_get(oi, 'region_seconds'))} ({_get(oi, 'region_cpgs')} CpGs)",
        f"{s(_get(op, 'sel_seconds'))}, peak {mb(_get(op, 'peak_rss'))}",
    )
    out[-1]["met"] = "met" if max(_get(oi, "sel_seconds") or 9, _get(oi, "region_seconds") or 9) <= 0.05 else "NOT met"
    b8, b32 = r.get("ingest_batch8", {}), r.get("ingest_batch32", {})
    add(
        f"peak RSS ingesting a 32-sample batch vs an 8-sample batch (max_memory={z['max_memory_mb']} MiB)",
        ratio(_get(b32, "peak_rss"), _get(b8, "peak_rss")),
        "<= 1.2x",
        1.2,
        "lower",
        f"{mb(_get(b32, 'peak_rss'))} ({grown(b32)} during the ingest), {s(_get(b32, 'seconds'))}",
        f"{mb(_get(b8, 'peak_rss'))} ({grown(b8)}), {s(_get(b8, 'seconds'))}",
    )
    add(
        "ingest throughput on a dask LocalCluster (2 worker processes) vs single-process",
        ratio(_get(dsk, "rows_per_s"), ingest_rows),
        ">= 1.6x",
        1.6,
        "higher",
        f"{rps(_get(dsk, 'rows_per_s'))}, {s(_get(dsk, 'seconds'))} (+{s(_get(dsk, 'cluster_start_seconds'))} "
        f"cluster start), worker peak {mb(_get(dsk, 'worker_peak_rss'))}",
        f"{rps(ingest_rows)}",
    )
    return out


def markdown(table: list[dict[str, str]], meta: dict[str, Any]) -> str:
    head = ["| what | ratio | target | | ours | baseline (same run) |", "|---|---|---|---|---|---|"]
    body = [
        f"| {t['what']} | {t['ratio']} | {t['target']} | {t['met']} | {t['ours']} | {t['baseline']} |" for t in table
    ]
    sizes = ", ".join(f"{k}={v:,}" for k, v in meta["sizes"].items())
    return "\n".join([f"Size `{meta['size']}` ({sizes}); {meta['machine']}; {meta['when']}.", "", *head, *body, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes")
    parser.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "results"),
        help="directory for results.json and results.md",
    )
    parser.add_argument("--workdir", help="where to build the data (default: a temporary directory, removed after)")
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "default")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xr-methyl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        results = measure(size, work, log)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "size": size,
        "sizes": SIZES[size],
        "seconds": time.perf_counter() - t0,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    table = rows(results, SIZES[size])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, "table": table, "cases": results}, indent=1))
    text = markdown(table, meta)
    (out / "results.md").write_text(text)
    print(text)
    return 0 if not any("error" in v for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
