"""``xr-methyl``: the command line.

Commands: ``demo``, ``init``, ``ensure``, ``info``, ``verify``, ``gc``.  User
errors print one line and exit 1; only unexpected failures show a traceback.
Everything printed or logged passes through :func:`xr_methyl.redact.redact`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

from xr_methyl.errors import MethylError
from xr_methyl.redact import RedactingFilter, redact


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    try:
        return args.run(args) or 0
    except (MethylError, OSError, ValueError, TypeError) as err:
        message = err.message if hasattr(err, "message") else str(err)
        print(redact(f"xr-methyl {args.command}: error: {message}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xr-methyl {args.command}: interrupted; the store keeps its last commit", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xr-methyl", description="A Zarr cache of wide methylation matrices.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build a synthetic cohort, create a store, ensure a subset twice")
    demo.add_argument("dir", nargs="?", default="xr-methyl-demo", help="folder for the demo (default: %(default)s)")
    demo.add_argument("--samples", type=int, default=48, help="samples in the cohort (default: %(default)s)")
    demo.add_argument("--cpgs", type=int, default=200_000, help="CpGs in the cohort (default: %(default)s)")
    demo.add_argument("--batch-size", type=int, default=8, help="samples per batch (default: %(default)s)")
    demo.add_argument("--subset", type=int, default=20, help="samples to ensure (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace a demo already in DIR")
    demo.set_defaults(run=_demo)

    init = sub.add_parser("init", help="create an empty store whose CpG axis is the warehouse's cpgs table")
    init.add_argument("store", help=STORE_HELP)
    _storage_options(init)
    init.add_argument("--warehouse", required=True, help="warehouse path or URI")
    init.add_argument("--coverage-dtype", default="uint16", choices=["uint8", "uint16", "uint32"])
    init.set_defaults(run=_init)

    ensure = sub.add_parser("ensure", help="ingest the given samples into a store if missing")
    ensure.add_argument("store", help=STORE_HELP)
    _storage_options(ensure)
    ensure.add_argument("ids", nargs="*", help="sample ids")
    ensure.add_argument("--ids-file", help="file with one sample id per line")
    ensure.add_argument("--warehouse", help="warehouse path or URI (default: the one in the store's manifest)")
    ensure.add_argument("--no-progress", action="store_true")
    ensure.set_defaults(run=_ensure)

    info = sub.add_parser("info", help="describe a store")
    info.add_argument("store", help=STORE_HELP)
    _storage_options(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)

    verify = sub.add_parser("verify", help="check a store's files (and, optionally, cells against the warehouse)")
    verify.add_argument("store", help=STORE_HELP)
    _storage_options(verify)
    verify.add_argument("--against-warehouse", type=int, default=0, metavar="N",
                        help="also compare N random (sample, CpG) cells with the warehouse")
    verify.add_argument("--warehouse", help="warehouse path or URI (default: the one in the store's manifest)")
    verify.add_argument("--seed", type=int, default=None, help="seed of the random cells")
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(run=_verify)

    gc = sub.add_parser("gc", help="reclaim what interrupted writers left behind (never committed data)")
    gc.add_argument("store", help=STORE_HELP)
    _storage_options(gc)
    gc.add_argument("--warehouse", help="also reclaim this warehouse's abandoned export staging")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument("--json", action="store_true", help="print JSON")
    gc.set_defaults(run=_gc)
    return parser


STORE_HELP = "store directory or s3://bucket/prefix"


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--storage-option", action="append", default=[], metavar="KEY=VALUE", dest="storage_options",
        help="S3 store option, e.g. endpoint_url=http://localhost:9000, region=eu-west-1, profile=NAME "
             "(repeatable; credentials come from the AWS chain: keep secrets off the command line)")


def _options(args) -> dict[str, str] | None:
    out = {}
    for item in args.storage_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {key!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out or None


def _init(args) -> int:
    from xr_methyl.store import MethylStore

    store = MethylStore.create(args.store, warehouse=args.warehouse, coverage_dtype=args.coverage_dtype,
                               storage_options=_options(args))
    print(f"created {store.storage.uri}: {store.n_cpgs:,} CpGs from {store.manifest['warehouse']}")
    return 0


def _read_ids(args) -> list[str]:
    ids = list(args.ids)
    if args.ids_file:
        text = Path(args.ids_file).read_text(encoding="utf-8")
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise ValueError("no sample ids given; pass them as arguments or with --ids-file")
    return ids


def _ensure(args) -> int:
    from xr_methyl.loader import Loader

    loader = Loader(args.store, args.warehouse, storage_options=_options(args))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = loader.ingest(_read_ids(args), progress=not args.no_progress)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    print(
        f"{report.requested} requested: {report.cached} already cached, {len(report.ingested)} ingested "
        f"from {len(report.batches)} batch(es), {report.long_rows:,} long rows, {seconds:.2f} s"
    )
    return 0


def _info(args) -> int:
    from xr_methyl.store import MethylStore

    info = MethylStore.open(args.store, storage_options=_options(args)).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    layout = info["layout"]
    print(f"store      {info['path']}")
    print(f"samples    {info['samples']:,} in {info['batches']} batch(es) ({info['rows']:,} rows with padding)")
    print(f"cpgs       {info['cpgs']:,}")
    print(f"layout     chunks {tuple(layout['chunk_shape'])}, shards {tuple(layout['shard_shape'])}, "
          f"coverage {info['coverage_dtype']}")
    print(f"warehouse  {info['warehouse']}")
    cost = info.get("warehouse_cost") or {}
    if cost.get("queries"):
        print(f"paid       {cost['queries']} warehouse quer{'y' if cost['queries'] == 1 else 'ies'}, "
              f"{_size(cost['bytes_scanned'])} scanned, about ${cost['dollars']:.4f} (Athena list price)")
    print(f"on disk    {_size(info['bytes']['total'])} (beta {_size(info['bytes']['beta'])}, "
          f"coverage {_size(info['bytes']['coverage'])})")
    return 0


def _verify(args) -> int:
    """Exit 0 when healthy; 1 with the problems, one per line (the first line sums up)."""
    from xr_methyl.verify import verify_store

    if args.against_warehouse < 0:
        raise ValueError(f"--against-warehouse {args.against_warehouse}: expected a number of cells >= 0")
    report = verify_store(args.store, warehouse=args.warehouse, cells=args.against_warehouse, seed=args.seed,
                          storage_options=_options(args))
    if args.json:
        print(redact(json.dumps({"ok": report.ok, "path": report.path, "problems": report.problems,
                                 "notes": report.notes, "checked": report.checked}, indent=2)))
    else:
        print(redact(report.summary()))
        for problem in report.problems:
            print(redact(f"  problem: {problem}"))
        for note in report.notes:
            print(redact(f"  note: {note}"))
    return 0 if report.ok else 1


def _gc(args) -> int:
    from xr_methyl.errors import StoreNotFoundError
    from xr_methyl.store import MethylStore

    options = _options(args)
    try:
        store = MethylStore.open(args.store, storage_options=options)
    except StoreNotFoundError:
        # No store opens there: perhaps an interrupted create left something to clear.
        report = MethylStore.reclaim_create(args.store, storage_options=options, dry_run=args.dry_run)
        if not report.removed:
            raise
    else:
        report = store.gc(warehouse=args.warehouse, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": report.dry_run, "bytes": report.bytes, "removed": report.removed,
                          "broken_locks": report.broken_locks}, indent=2))
        return 0
    print(report.summary())
    for key, size in report.removed:
        print(f"  {key} ({_size(size)})")
    return 0


def _demo(args) -> int:
    import numpy as np
    import xarray as xr

    import xr_methyl  # noqa: F401  (registers ds.methyl)
    from xr_methyl.store import MethylStore
    from xr_methyl.synthetic import build_cohort
    from xr_methyl.warehouse import LocalWarehouse

    root = Path(args.dir)
    wh_dir, store_dir = root / "warehouse", root / "cohort.methyl.zarr"
    if wh_dir.exists() or store_dir.exists():
        if not args.overwrite:
            raise MethylError(f"{root} already holds a demo; pass --overwrite to replace it, or choose another folder")
        shutil.rmtree(wh_dir, ignore_errors=True)
        shutil.rmtree(store_dir, ignore_errors=True)
    if not 0 < args.subset <= args.samples:
        raise ValueError(f"--subset {args.subset}: expected between 1 and --samples ({args.samples})")

    print(f"1. Building a synthetic cohort in the embedded Iceberg warehouse {wh_dir}")
    t0 = time.perf_counter()
    cohort = build_cohort(LocalWarehouse(wh_dir), n_samples=args.samples, n_cpgs=args.cpgs,
                          batch_size=args.batch_size, seed=args.seed)
    print(f"   {args.samples} samples in {len(cohort.batch_ids)} batches x {args.cpgs:,} CpGs "
          f"({time.perf_counter() - t0:.1f} s)")

    print(f"2. Creating the store {store_dir} (CpG axis = the warehouse's cpgs table)")
    store = MethylStore.create(store_dir, warehouse=LocalWarehouse(wh_dir))
    print(f"   layout {store.manifest['layout']}")

    rng = np.random.default_rng(args.seed)
    subset = [cohort.sample_ids[i] for i in rng.choice(args.samples, size=args.subset, replace=False)]
    ds = xr.open_dataset(store_dir, engine="methylzarr")
    print(f"3. ds.methyl.ensure({args.subset} samples): the first call pays the warehouse")
    t0 = time.perf_counter()
    first = ds.methyl.ensure(subset)
    beta = first.beta.values
    t_first = time.perf_counter() - t0
    print(f"   {t_first:.2f} s for beta {beta.shape} {beta.dtype}; {np.isnan(beta).mean():.1%} missing")

    print("4. The same call again: read from the cache only")
    t0 = time.perf_counter()
    again = ds.methyl.ensure(subset, progress=False)
    beta_again = again.beta.values
    t_again = time.perf_counter() - t0
    same = np.array_equal(beta, beta_again, equal_nan=True)
    print(f"   {t_again:.2f} s ({t_first / max(t_again, 1e-9):.0f}x faster); identical values: {same}")

    info = MethylStore.open(store_dir).info()
    print(f"5. The store now holds {info['samples']} samples in {info['batches']} batches, "
          f"{_size(info['bytes']['total'])} on disk")
    print(f"   try: xr-methyl info {store_dir}")
    return 0 if same else 1


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


if __name__ == "__main__":
    sys.exit(main())
