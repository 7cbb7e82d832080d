"""``xr-methyl import`` and ``xr-methyl axis``: the importers on the command line."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import asdict

from xr_methyl.importers.calls import STRAND_CHOICES

_FORMAT_HELP = {
    "bismark-cov": "Bismark coverage *.bismark.cov[.gz]",
    "bismark-report": "Bismark CpG report / cytosine report *CpG_report.txt[.gz]",
    "bedmethyl": "modkit (ONT) pileup bedMethyl",
    "methylkit": "methylKit per-sample text table",
    "methyldackel": "MethylDackel bedGraph *_CpG.bedGraph",
    "array": "array beta matrix (probes x samples, CSV/TSV), with --manifest",
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the ``import`` and ``axis`` subcommands to the ``xr-methyl`` parser."""
    from xr_methyl.importers import FORMATS

    conventions = "\n".join(
        f"  {name:<15} {_FORMAT_HELP[name]}\n  {'':<15} {cls.convention}" for name, cls in FORMATS.items()
    )
    imp = sub.add_parser(
        "import",
        help="import pipeline output files as one batch of an Iceberg warehouse (replacing the batch)",
        description="Import files of one format as batch B. Formats and their coordinate conventions:\n" + conventions,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("format", choices=sorted(FORMATS), metavar="FORMAT", help="one of: " + ", ".join(FORMATS))
    imp.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="input files, .gz or plain (may be left out when the sample sheet has a file column)",
    )
    imp.add_argument("--warehouse", required=True, help="warehouse path or Iceberg catalog URI (glue://...)")
    imp.add_argument("--batch", required=True, help="the batch id; a batch imported before is replaced")
    imp.add_argument(
        "--sample-sheet", metavar="CSV", help="sample_id [, file, batch_id] and metadata columns (age, sex, ...)"
    )
    imp.add_argument(
        "--strands",
        choices=STRAND_CHOICES,
        default="merge",
        help="merge: sum both strands of a CpG (default); + or -: keep one strand's records",
    )
    imp.add_argument("--manifest", help="array format: the probe manifest (Illumina CSV, or probe_id,chrom,pos)")
    imp.add_argument(
        "--chrom-prefix",
        default="",
        metavar="P",
        help="array format: put P (e.g. chr) before manifest chromosome names lacking it",
    )
    imp.add_argument(
        "--duplicates",
        choices=("mean", "error"),
        default="mean",
        help="array format: several probes on one CpG are averaged (default) or refused",
    )
    imp.add_argument("--workers", type=int, default=None, help="files read at once (default: CPUs)")
    imp.add_argument("--json", action="store_true", help="print the report as JSON")
    imp.set_defaults(run=_import)

    axis = sub.add_parser(
        "axis", help="fill the warehouse's cpgs table (the CpG axis) from a FASTA, a manifest or the imported sites"
    )
    axis.add_argument("--warehouse", required=True, help="warehouse path or Iceberg catalog URI (glue://...)")
    source = axis.add_mutually_exclusive_group(required=True)
    source.add_argument("--fasta", help="every CpG of this genome (FASTA, .gz or plain)")
    source.add_argument("--manifest", help="every placed probe of this array manifest")
    source.add_argument("--from-imported", action="store_true", help="the distinct CpGs imported into beta so far")
    axis.add_argument("--chrom-prefix", default="", metavar="P", help="with --manifest: as for import")
    axis.add_argument("--replace", action="store_true", help="replace a cpgs table that already has rows")
    axis.set_defaults(run=_axis)


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def _import(args) -> int:
    from xr_methyl.importers import get_format, import_batch

    fmt = get_format(args.format, manifest=args.manifest, chrom_prefix=args.chrom_prefix, duplicates=args.duplicates)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = import_batch(
            args.warehouse,
            fmt,
            args.files,
            batch_id=args.batch,
            sample_sheet=args.sample_sheet,
            strands=args.strands,
            workers=args.workers,
        )
    _print_warnings(caught)
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0


def _axis(args) -> int:
    from xr_methyl.importers import build_axis

    report = build_axis(
        args.warehouse,
        fasta=args.fasta,
        manifest=args.manifest,
        chrom_prefix=args.chrom_prefix,
        from_imported=args.from_imported,
        replace=args.replace,
    )
    print(report.summary())
    return 0
