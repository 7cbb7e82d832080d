"""Bring your own data: import the files methylation pipelines write into an Iceberg warehouse.

One module per format, each a small class following :class:`~xr_methyl.importers.base.Format`:

============== ================================ ==========================================================
name           module                           files
============== ================================ ==========================================================
bismark-cov    :mod:`.bismark`                  Bismark coverage (``*.bismark.cov[.gz]``)
bismark-report :mod:`.bismark`                  Bismark CpG report / genome-wide cytosine report
bedmethyl      :mod:`.bedmethyl`                modkit (ONT) pileup bedMethyl
methylkit      :mod:`.methylkit`                methylKit per-sample text tables
methyldackel   :mod:`.methyldackel`             MethylDackel bedGraph
array          :mod:`.array`                    array beta matrix (probes x samples) + probe manifest
============== ================================ ==========================================================

:func:`import_batch` reads files of one format into a batch (streaming, files in
parallel, one Iceberg commit per table, re-import replaces the batch);
:func:`build_axis` fills the ``cpgs`` table from a FASTA, a manifest or the
imported sites.  CpG ids follow :mod:`xr_methyl.importers.ids`.

Example::

    from xr_methyl import LocalWarehouse, MethylStore
    from xr_methyl.importers import build_axis, get_format, import_batch

    wh = LocalWarehouse("warehouse")
    build_axis(wh, fasta="GRCh38.fa.gz")
    import_batch(wh, get_format("bismark-cov"), ["S1.bismark.cov.gz", "S2.bismark.cov.gz"],
                 batch_id="run1", sample_sheet="samples.csv")
    MethylStore.create("cohort.methyl.zarr", warehouse=wh)
"""

from __future__ import annotations

import os

from xr_methyl.importers.array import ArrayBetas, Manifest, read_manifest
from xr_methyl.importers.axis import AxisReport, build_axis, fasta_cpgs
from xr_methyl.importers.base import Format, ImportFormatError
from xr_methyl.importers.batch import FileReport, ImportInputWarning, ImportReport, import_batch
from xr_methyl.importers.bedmethyl import BedMethyl
from xr_methyl.importers.bismark import BismarkCoverage, BismarkReport
from xr_methyl.importers.ids import cpg_id, cpg_ids, parse_cpg_id
from xr_methyl.importers.methyldackel import MethylDackel
from xr_methyl.importers.methylkit import MethylKit

#: The formats by command-line name (the array format also needs a manifest: use :func:`get_format`).
FORMATS: dict[str, type] = {
    f.name: f for f in (BismarkCoverage, BismarkReport, BedMethyl, MethylKit, MethylDackel, ArrayBetas)
}

__all__ = [
    "FORMATS",
    "ArrayBetas",
    "AxisReport",
    "BedMethyl",
    "BismarkCoverage",
    "BismarkReport",
    "FileReport",
    "Format",
    "ImportFormatError",
    "ImportReport",
    "ImportInputWarning",
    "Manifest",
    "MethylDackel",
    "MethylKit",
    "build_axis",
    "cpg_id",
    "cpg_ids",
    "fasta_cpgs",
    "get_format",
    "import_batch",
    "parse_cpg_id",
    "read_manifest",
]


def get_format(
    name: str, *, manifest: str | os.PathLike | Manifest | None = None, chrom_prefix: str = "", duplicates: str = "mean"
) -> Format:
    """The format called ``name`` (see :data:`FORMATS`).

    ``manifest`` (a path or a :class:`Manifest`) is required by ``"array"`` and
    refused by the others; ``chrom_prefix`` and ``duplicates`` are passed to
    :func:`read_manifest` and :class:`ArrayBetas`.
    """
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; expected one of {sorted(FORMATS)}")
    if name == ArrayBetas.name:
        if manifest is None:
            raise ValueError("the array format needs the probe manifest (manifest=... / --manifest FILE)")
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest, chrom_prefix=chrom_prefix)
        return ArrayBetas(manifest, duplicates=duplicates)
    if manifest is not None:
        raise ValueError(f"a manifest is for the array format, not {name!r}")
    return FORMATS[name]()
