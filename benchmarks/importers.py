"""Import throughput per format: lines per second and peak RSS, each import in a fresh process.

    python -m benchmarks.importers --lines 3000000 [--formats bismark-cov,array] [--out DIR]

Files of about ``--lines`` lines are generated per format (gzip-compressed where
the tools usually compress), laid out as each tool writes them, on a synthetic
genome whose CpGs are also the warehouse's axis (the strandless formats need
it).  Each import runs in its own process, so its peak RSS is its own; the
same file at a third of the length shows whether memory follows the file's
length.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

FORMATS = ("bismark-cov", "bismark-report", "bedmethyl", "methylkit", "methyldackel", "array")
N_CHROMS = 5
ARRAY_SAMPLES = 16


def _cpgs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(chromosome index, 1-based C position) of ``n`` CpGs in genome order, at least 2 bp apart."""
    chrom = np.repeat(np.arange(N_CHROMS), -(-n // N_CHROMS))[:n]
    pos = np.empty(n, np.int64)
    for c in range(N_CHROMS):
        rows = chrom == c
        pos[rows] = 10_000 + np.cumsum(2 + rng.geometric(1 / 60, int(rows.sum())))
    return chrom, pos


def _write(path: Path, columns: dict[str, pa.Array], *, header: str | None = None) -> None:
    table = pa.table(columns)
    sink = pa.CompressedOutputStream(str(path), "gzip") if path.suffix == ".gz" else pa.OSFile(str(path), "wb")
    with sink:
        if header:
            sink.write(header.encode())
        pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none"))


def generate(
    fmt: str, lines: int, folder: Path, axis: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[Path, int, list[str]]:
    """A file of about ``lines`` lines over the first CpGs of ``axis``; returns (path, lines, import options)."""
    per_cpg = {"bismark-cov": 2, "bismark-report": 2, "bedmethyl": 4, "methylkit": 2, "methyldackel": 2}.get(fmt, 1)
    n = max(1, lines // per_cpg)
    chrom_index, pos = axis[0][:n], axis[1][:n]
    stem = f"{fmt.replace('-', '_')}_{lines}"  # the sample id: unique in the one warehouse
    names = np.array([f"chr{c + 1}" for c in range(N_CHROMS)])
    if fmt == "array":
        probes = pa.array([f"cg{i:08d}" for i in range(n)])
        manifest = folder / "manifest.csv"
        _write(
            manifest,
            {"probe_id": probes, "chrom": pa.array(names[chrom_index]), "pos": pa.array(pos)},
            header="probe_id\tchrom\tpos\n",
        )
        values = {f"S{j:02d}_{lines}": pa.array(np.round(rng.random(n), 6)) for j in range(ARRAY_SAMPLES)}
        path = folder / "betas.tsv"
        _write(path, {"probe": probes, **values}, header="\t".join(["ID_REF", *values]) + "\n")
        return path, n + 1, [str(manifest)]
    # both strands of every CpG, in position order: + at pos, - at pos + 1
    chrom = np.repeat(names[chrom_index], 2)
    c_pos = np.stack([pos, pos + 1], axis=1).ravel()
    strand = np.tile(np.array(["+", "-"]), n)
    m = rng.integers(0, 20, 2 * n)
    u = rng.integers(0, 20, 2 * n)
    pct = np.round(100 * m / np.maximum(m + u, 1), 2)
    if fmt == "bismark-cov":
        path = folder / f"{stem}.bismark.cov.gz"
        _write(path, {"c": chrom, "s": c_pos, "e": c_pos, "p": pct, "m": m, "u": u})
    elif fmt == "bismark-report":
        path = folder / f"{stem}.CpG_report.txt.gz"
        _write(
            path,
            {
                "c": chrom,
                "p": c_pos,
                "s": strand,
                "m": m,
                "u": u,
                "x": np.full(2 * n, "CG"),
                "t": np.where(strand == "+", "CGA", "CGT"),
            },
        )
    elif fmt == "methylkit":
        path = folder / f"{stem}_CpG.methylKit"
        cov = np.maximum(m + u, 1)
        freq = np.round(100 * m / cov, 2)
        _write(
            path,
            {
                "id": pa.array(np.char.add(np.char.add(chrom, "."), c_pos.astype(str))),
                "c": chrom,
                "b": c_pos,
                "s": np.where(strand == "+", "F", "R"),
                "n": cov,
                "f": freq,
                "t": np.round(100 - freq, 2),
            },
            header="chrBase\tchr\tbase\tstrand\tcoverage\tfreqC\tfreqT\n",
        )
    elif fmt == "methyldackel":
        path = folder / f"{stem}_CpG.bedGraph"
        _write(
            path,
            {"c": chrom, "s": c_pos - 1, "e": c_pos, "p": pct.astype(np.int64), "m": m, "u": u},
            header='track type="bedGraph" description="S1 CpG methylation levels"\n',
        )
    elif fmt == "bedmethyl":
        path = folder / f"{stem}.bed.gz"
        start = np.repeat(c_pos - 1, 2)
        h = rng.integers(0, 3, 4 * n)
        mm, uu = np.repeat(m, 2), np.repeat(u, 2)
        valid = mm + uu + h
        code = np.tile(np.array(["h", "m"]), 2 * n)
        mod = np.where(code == "m", mm, h)
        other = np.where(code == "m", h, mm)
        zeros = np.zeros(4 * n, np.int64)
        _write(
            path,
            {
                "c": np.repeat(chrom, 2),
                "s": start,
                "e": start + 1,
                "code": code,
                "score": valid,
                "strand": np.repeat(strand, 2),
                "ts": start,
                "te": start + 1,
                "rgb": np.full(4 * n, "255,0,0"),
                "valid": valid,
                "pct": np.round(100 * mod / np.maximum(valid, 1), 2),
                "mod": mod,
                "canonical": uu,
                "other": other,
                "d": zeros,
                "f": zeros,
                "x": zeros,
                "nc": zeros,
            },
        )
        return path, 4 * n, []
    else:
        raise ValueError(fmt)
    return path, 2 * n, []


def _axis(warehouse: Path, lines: int) -> tuple[np.ndarray, np.ndarray]:
    """The warehouse's cpgs table: enough CpGs for every file (each file takes the first of them)."""
    from xr_methyl import LocalWarehouse

    chrom_index, pos = _cpgs(lines, np.random.default_rng(0))
    names = np.array([f"chr{c + 1}" for c in range(N_CHROMS)])
    chrom = names[chrom_index]
    wh = LocalWarehouse(warehouse)
    wh.create_tables()
    wh.append(
        "cpgs", pa.table({"cpg_id": np.char.add(np.char.add(chrom, ":"), pos.astype(str)), "chrom": chrom, "pos": pos})
    )
    return chrom_index, pos


def _peak_rss() -> int:
    """This process's peak resident set in bytes: VmHWM, which (unlike ru_maxrss, kept across fork and exec
    on Linux) counts this program only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(args: list[str]) -> dict:
    """Run one import in this process and report its time and peak RSS."""
    from xr_methyl.importers import get_format, import_batch

    fmt, path, warehouse, lines = args[0], Path(args[1]), Path(args[2]), int(args[3])
    manifest = args[4] if len(args) > 4 else None
    started = time.perf_counter()
    report = import_batch(warehouse, get_format(fmt, manifest=manifest), [path], batch_id=f"{fmt}-{lines}")
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    return {
        "format": fmt,
        "lines": lines,
        "bytes": path.stat().st_size,
        "seconds": seconds,
        "lines_per_s": lines / seconds,
        "peak_rss": peak,
        "rows": report.counts.sites,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--out", help="folder for the files and warehouse (default: a temporary one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    folder = Path(args.out or tempfile.mkdtemp(prefix="xr-methyl-import-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    warehouse = folder / "warehouse"
    axis = _axis(warehouse, args.lines)
    results = []
    for fmt in args.formats.split(","):
        for lines in (args.lines // 3, args.lines):
            sub = folder / f"{fmt}-{lines}"
            sub.mkdir(exist_ok=True)
            path, n, options = generate(fmt, lines, sub, axis, np.random.default_rng(1))
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.importers",
                    "--child",
                    fmt,
                    str(path),
                    str(warehouse),
                    str(n),
                    *options,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(
                f"{fmt:<15} {result['lines']:>11,} lines {result['bytes'] / 2**20:8.1f} MiB "
                f"{result['seconds']:7.2f} s {result['lines_per_s']:>11,.0f} lines/s "
                f"peak RSS {result['peak_rss'] / 2**20:7.0f} MiB",
                flush=True,
            )
    (folder / "importers.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
