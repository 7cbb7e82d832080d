"""``xr-methyl``: the command line.

Commands: ``demo``, ``init``, ``ensure``, ``info``, ``verify``, ``gc``; ``import`` and ``axis``
(in :mod:`xr_methyl.importers.commands`).  User
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

from xr_methyl.errors import MethylError, StoreNotFoundError
from xr_methyl.redact import RedactingFilter, redact


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if not args.verbose:
        # PyAthena logs a failed query with its traceback before raising; the error
        # we print says the same in one line, so its log shows only with -v.
        logging.getLogger("pyathena").setLevel(logging.CRITICAL)
    try:
        return args.run(args) or 0
    except (MethylError, OSError, ValueError, TypeError) as err:
        message = err.message if hasattr(err, "message") else str(err)
        if isinstance(err, StoreNotFoundError) and err.location is not None:
            message = (
                f"no methylzarr store at {err.location}; create one with: xr-methyl init {err.location} "
                "--warehouse WAREHOUSE"
            )
        print(redact(f"xr-methyl {args.command}: error: {message}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"xr-methyl {args.command}: interrupted; the store keeps its last commit", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    from xr_methyl import __version__

    parser = argparse.ArgumentParser(prog="xr-methyl", description="A Zarr cache of wide methylation matrices.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build a synthetic cohort, create a store, ensure a subset twice")
    demo.add_argument("dir", nargs="?", default="xr-methyl-demo", help="folder for the demo (default: %(default)s)")
    demo.add_argument(
        "--athena",
        action="store_true",
        help="the production path on this machine, offline: the cohort in Iceberg tables on a "
        "local S3 and Glue (moto), read through AthenaWarehouse (PyAthena) from an Athena "
        "stand-in; needs the demo extra",
    )
    demo.add_argument(
        "--store",
        help="the store's directory (default: DIR/cohort.methyl.zarr; with --athena "
        "the store goes on moto's S3 unless a directory is given)",
    )
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
    init.add_argument(
        "--by-cpg-chunk",
        type=int,
        default=0,
        metavar="W",
        help="also keep a CpG-major copy of beta with inner chunks of W CpGs (e.g. 64), which makes "
        "reads of few scattered CpGs fast; costs disk and append time (default: 0, none)",
    )
    init.add_argument(
        "--by-cpg-codec",
        default="zstd",
        choices=["zstd", "raw"],
        help="codec of that copy: zstd (less disk) or raw (faster appends and reads)",
    )
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
    verify.add_argument(
        "--against-warehouse",
        type=int,
        default=0,
        metavar="N",
        help="also compare N random (sample, CpG) cells with the warehouse",
    )
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

    from xr_methyl.importers.commands import add_commands

    add_commands(sub)
    return parser


STORE_HELP = "store directory or s3://bucket/prefix"


def _storage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--storage-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="storage_options",
        help="S3 store option, e.g. endpoint_url=http://localhost:9000, region=eu-west-1, profile=NAME "
        "(repeatable; credentials come from the AWS chain: keep secrets off the command line)",
    )


def _options(args) -> dict[str, str] | None:
    out = {}
    for item in args.storage_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {key!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out or None


def _init(args) -> int:
    from xr_methyl.store import Layout, MethylStore

    layout = Layout(by_cpg_chunk=args.by_cpg_chunk, by_cpg_codec=args.by_cpg_codec)
    store = MethylStore.create(
        args.store,
        warehouse=args.warehouse,
        coverage_dtype=args.coverage_dtype,
        layout=layout,
        storage_options=_options(args),
    )
    print(f"created {store.storage.uri}: {store.n_cpgs:,} CpGs from {store.manifest.warehouse}")
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
    from xr_methyl.ingest.loader import Loader

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
    for line in _info_lines(info):
        print(line)
    return 0


def _info_lines(info: dict) -> list[str]:
    """What ``xr-methyl info`` prints of :meth:`MethylStore.info`."""
    layout = info["layout"]
    lines = [
        f"store      {info['path']}",
        f"samples    {info['samples']:,} in {info['batches']} batch(es) ({info['rows']:,} rows with padding)",
        f"cpgs       {info['cpgs']:,}",
        (
            f"layout     chunks {tuple(layout['chunk_shape'])}, shards {tuple(layout['shard_shape'])}, "
            f"coverage {info['coverage_dtype']}"
            + (
                f"; CpG-major copy of beta in chunks of {layout['by_cpg']['chunk']} CpGs ({layout['by_cpg']['codec']})"
                if layout.get("by_cpg")
                else ""
            )
        ),
        f"warehouse  {info['warehouse']}",
    ]
    cost = info.get("warehouse_cost") or {}
    if cost.get("queries"):
        lines.append(
            f"paid       {cost['queries']} warehouse quer{'y' if cost['queries'] == 1 else 'ies'}, "
            f"{_size(cost['bytes_scanned'])} scanned, about ${cost['dollars']:.4f} (Athena list price)"
        )
    lines.append(
        f"on disk    {_size(info['bytes']['total'])} (beta {_size(info['bytes']['beta'])}, "
        f"coverage {_size(info['bytes']['coverage'])}"
        + (f", its CpG-major copy {_size(info['bytes']['beta_by_cpg'])}" if "beta_by_cpg" in info["bytes"] else "")
        + ")"
    )
    return lines


def _verify(args) -> int:
    """Exit 0 when healthy; 1 with the problems, one per line (the first line sums up)."""
    from xr_methyl.store.verify import verify_store

    if args.against_warehouse < 0:
        raise ValueError(f"--against-warehouse {args.against_warehouse}: expected a number of cells >= 0")
    report = verify_store(
        args.store,
        warehouse=args.warehouse,
        cells=args.against_warehouse,
        seed=args.seed,
        storage_options=_options(args),
    )
    if isinstance(report.error, StoreNotFoundError) and report.error.location is not None and not args.json:
        raise report.error  # nothing there to verify: one line, which says how to create a store
    if args.json:
        print(
            redact(
                json.dumps(
                    {
                        "ok": report.ok,
                        "path": report.path,
                        "problems": report.problems,
                        "notes": report.notes,
                        "checked": report.checked,
                    },
                    indent=2,
                )
            )
        )
    else:
        print(redact(report.summary()))
        for problem in report.problems:
            print(redact(f"  problem: {problem}"))
        for note in report.notes:
            print(redact(f"  note: {note}"))
    return 0 if report.ok else 1


def _gc(args) -> int:
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
        print(
            json.dumps(
                {
                    "dry_run": report.dry_run,
                    "bytes": report.bytes,
                    "removed": report.removed,
                    "broken_locks": report.broken_locks,
                },
                indent=2,
            )
        )
        return 0
    print(report.summary())
    for key, size in report.removed:
        print(f"  {key} ({_size(size)})")
    return 0


def _demo(args) -> int:
    root = Path(args.dir)
    if args.store is not None and "://" in args.store:
        raise ValueError(f"--store {args.store}: expected a local directory")
    if args.athena:  # the store on moto's S3 (a fresh bucket each run) unless a directory is given
        store_dir = Path(args.store) if args.store else None
        candidates = [store_dir] if store_dir else []
    else:
        store_dir = Path(args.store or root / "cohort.methyl.zarr")
        candidates = [root / "warehouse", store_dir]
    found = [p for p in candidates if p.exists()]
    if found and not args.overwrite:
        raise MethylError(f"{found[0]} already holds a demo; pass --overwrite to replace it, or choose another folder")
    if not 0 < args.subset <= args.samples:
        raise ValueError(f"--subset {args.subset}: expected between 1 and --samples ({args.samples})")
    if args.athena:
        from xr_methyl.testing import local_aws

        local_aws.require()
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return (_demo_athena if args.athena else _demo_embedded)(args, store_dir)


def _demo_embedded(args, store_dir: Path) -> int:
    """``demo``: the main job on the embedded warehouse, all on local disk."""
    from xr_methyl.synthetic import build_cohort
    from xr_methyl.warehouse import LocalWarehouse

    wh_dir = Path(args.dir) / "warehouse"
    print(f"1. Building a synthetic cohort in the embedded Iceberg warehouse {wh_dir}")
    t0 = time.perf_counter()
    cohort = build_cohort(
        LocalWarehouse(wh_dir), n_samples=args.samples, n_cpgs=args.cpgs, batch_size=args.batch_size, seed=args.seed
    )
    print(
        f"   {args.samples} samples in {len(cohort.batch_ids)} batches x {args.cpgs:,} CpGs "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    print(f"2. Creating the store {store_dir} (CpG axis = the warehouse's cpgs table)")
    store = _demo_create_store(str(store_dir), None, LocalWarehouse(wh_dir))
    print(f"   layout {store.manifest.layout.to_json()}")

    same, _ = _demo_ensure_twice(str(store_dir), None, _demo_subset(cohort, args), step=3)
    info = _demo_open(str(store_dir), None).info()
    print(
        f"5. The store now holds {info['samples']} samples in {info['batches']} batches, "
        f"{_size(info['bytes']['total'])} on disk"
    )
    print(f"   try: xr-methyl info {store_dir}")
    return 0 if same else 1


def _demo_athena(args, local_store: Path | None) -> int:
    """``demo --athena``: the production path (Iceberg on S3 + Glue, Athena, UNLOAD) on moto and the stand-in."""
    from xr_methyl.synthetic import build_cohort
    from xr_methyl.testing import local_aws

    started = time.perf_counter()
    print("The production path on this machine, offline: Iceberg tables in S3 + Glue, queried with Athena")
    with local_aws.moto_server() as moto:
        print(
            f"0. moto's S3 and Glue at {moto.endpoint} (dummy AWS credentials while it runs; "
            f"{time.perf_counter() - started:.1f} s)"
        )
        glue = local_aws.glue_warehouse(moto, "methylation")
        print(
            f"1. Building a synthetic cohort as Iceberg tables in Glue database {glue.namespace}, "
            f"data in {glue.properties['warehouse']}"
        )
        t0 = time.perf_counter()
        cohort = build_cohort(
            glue, n_samples=args.samples, n_cpgs=args.cpgs, batch_size=args.batch_size, seed=args.seed
        )
        print(
            f"   {args.samples} samples in {len(cohort.batch_ids)} batches x {args.cpgs:,} CpGs "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        with local_aws.start_standin(glue, moto, rows_per_file=1_000_000) as standin:
            athena = local_aws.athena_warehouse(standin, moto, moto.new_bucket("athena"), poll_interval=0.05)
            print(
                f"   Athena stand-in at {standin.endpoint}: Athena's API; it runs the SQL it is sent "
                "on DuckDB over those tables"
            )
            if local_store is None:
                location = f"s3://{moto.new_bucket('store')}/cohort.methyl.zarr"
                storage_options = {"endpoint_url": moto.endpoint}
            else:
                location, storage_options = str(local_store), None

            print(f"2. Creating the store {location}; its CpG axis is the cpgs table, UNLOADed through Athena")
            print(f"   warehouse {athena.describe()}")
            t0 = time.perf_counter()
            _demo_create_store(location, storage_options, athena)
            at_create = len(standin.executions)
            print(f"   {time.perf_counter() - t0:.2f} s, {at_create} Athena quer{'y' if at_create == 1 else 'ies'}")

            same, ran = _demo_ensure_twice(
                location, storage_options, _demo_subset(cohort, args), step=3, queries=lambda: len(standin.executions)
            )
            store = _demo_open(location, storage_options)
            print("5. What the first call paid, kept with each batch in the store's provenance:")
            queries = {q["query_id"]: q for entries in store.provenance.values() for e in entries for q in e["queries"]}
            for q in queries.values():
                print(
                    f"   {q['kind']:<20} query {q['query_id']}  {_size(q['bytes_scanned'])} scanned  "
                    f"${q['dollars']:.7f}"
                )
            print(f"6. xr-methyl info {location}")
            for line in _info_lines(store.info()):
                print(f"   {line}")
        print("7. Stopped the Athena stand-in and moto's server; moto's S3 and Glue are gone with it")
    print(
        f"   done in {time.perf_counter() - started:.1f} s; Athena queries: {at_create} to create the store, "
        f"{ran[0]} for the first ensure, {ran[1]} for the second"
    )
    if local_store is None:
        print(f"   the store {location} went with moto's S3; pass --store DIR to keep it on disk")
    else:
        print(f"   the store stays in {location}: xr-methyl info reads it; ensuring new samples")
        print("   would need its warehouse, which stopped with the demo")
    return 0 if same and ran[1] == 0 else 1


def _demo_subset(cohort, args) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    return [cohort.sample_ids[i] for i in rng.choice(args.samples, size=args.subset, replace=False)]


def _demo_create_store(location: str, storage_options: dict | None, warehouse):
    """The demo's store at ``location`` (a directory, or an ``s3://`` URL with its ``storage_options``)."""
    from xr_methyl.store import MethylStore

    return MethylStore.create(location, warehouse=warehouse, **_storage_kwargs(storage_options))


def _demo_open(location: str, storage_options: dict | None):
    from xr_methyl.store import MethylStore

    return MethylStore.open(location, **_storage_kwargs(storage_options))


def _storage_kwargs(storage_options: dict | None) -> dict:
    # Local stores take no storage options; only a store on object storage passes them on.
    return {} if storage_options is None else {"storage_options": storage_options}


def _demo_ensure_twice(
    location: str, storage_options: dict | None, subset: list[str], *, step: int, queries=None
) -> tuple[bool, tuple[int, int]]:
    """Ensure ``subset`` twice: the first call pays the warehouse, the second reads the cache only.

    Prints what each took; returns whether both gave the same values, and how
    many warehouse queries each ran when ``queries()`` counts them.
    """
    import numpy as np
    import xarray as xr

    import xr_methyl  # noqa: F401  (registers ds.methyl)

    count = queries or (lambda: 0)
    ds = xr.open_dataset(location, engine="methylzarr", **_storage_kwargs(storage_options))
    print(f"{step}. ds.methyl.ensure({len(subset)} samples): the first call pays the warehouse")
    t0, n0 = time.perf_counter(), count()
    first = ds.methyl.ensure(subset)
    beta, coverage = first.beta.values, first.coverage.values
    t_first, n_first = time.perf_counter() - t0, count() - n0
    print(
        f"   {t_first:.2f} s for beta {beta.shape} {beta.dtype}" + (f", {n_first} warehouse queries" if queries else "")
    )
    print(
        f"   values: {np.isnan(beta).mean():.1%} missing, mean beta {np.nanmean(beta):.6f}, "
        f"{int(coverage.sum()):,} reads"
    )

    print(f"{step + 1}. The same call again: read from the cache only")
    t0, n0 = time.perf_counter(), count()
    again = ds.methyl.ensure(subset, progress=False)
    same = np.array_equal(beta, again.beta.values, equal_nan=True) and np.array_equal(coverage, again.coverage.values)
    t_again, n_again = time.perf_counter() - t0, count() - n0
    print(
        f"   {t_again:.2f} s ({t_first / max(t_again, 1e-9):.0f}x faster)"
        + (f", {n_again} warehouse queries" if queries else "")
        + f"; identical values: {same}"
    )
    return same, (n_first, n_again)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


if __name__ == "__main__":
    sys.exit(main())
