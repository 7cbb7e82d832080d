"""Methylation array betas: a probes x samples matrix and a probe manifest that places each probe.

The matrix is CSV or TSV (the delimiter is read from the header line), quoted
or not (R's ``write.csv`` quotes): a header ``<probe column>, sample, sample,
...``, then one line per probe, betas in [0, 1]; ``NA``, ``NaN`` or an empty
field is a missing value (a failed probe) and gets no row.

The manifest maps probe ids to loci: Illumina's CSV manifest (the
``[Heading]``/``[Assay]``/``[Controls]`` sections; columns ``IlmnID``, ``Name``,
``CHR``, ``MAPINFO``) or any CSV/TSV with columns ``probe_id``, ``chrom``,
``pos``.  ``MAPINFO``/``pos`` is the 1-based position of the CpG's C on the +
strand, as minfi and SeSAMe annotate probes.  Probes without a locus (controls,
``NA``, position 0) are not imported and are counted in the report.
Several probes at one CpG (EPIC v2's replicates) give one row whose beta is
the mean of their values (``duplicates="mean"``) or an error (``"error"``).

Arrays measure no read counts: an array batch has no rows in ``coverage``, so
a store reads 0 ("no read count") there.  ``ds.methyl.mask(min_coverage=k)``
with ``k >= 1`` therefore hides array samples entirely; mask sequencing
cohorts only, or select the sequencing samples first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.importers.base import ImportFormatError, RowError
from xr_methyl.importers.calls import CallCounts, ReferenceSites
from xr_methyl.importers.ids import cpg_ids
from xr_methyl.importers.text import Column, Layout, head_lines, open_bytes, read_delimited

#: What counts as a missing beta.
NULL_VALUES = ("", "NA", "N/A", "NaN", "nan", "NULL", "null")
_PROBE_COLUMNS = ("probe_id", "IlmnID", "probe", "Name", "ID")
_CHROM_COLUMNS = ("chrom", "CHR", "chr", "seqnames")
_POS_COLUMNS = ("pos", "MAPINFO")
DUPLICATE_CHOICES = ("mean", "error")


def _delimiter(header: str) -> str:
    return "\t" if header.count("\t") >= header.count(",") else ","


def _split_header(header: str, delimiter: str) -> list[str]:
    return next(csv.reader([header], delimiter=delimiter))


@dataclass(frozen=True)
class Manifest:
    """Probe ids with their CpG (chromosome, 1-based position of the C on +), in manifest order."""

    probe_ids: pa.Array
    chrom: pa.Array
    pos: pa.Array
    unplaced: int  #: probes of the manifest without a locus

    def __len__(self) -> int:
        return len(self.probe_ids)

    @property
    def cpg_ids(self) -> pa.Array:
        return cpg_ids(self.chrom, self.pos)

    def sites(self) -> pa.Table:
        """The distinct CpGs of the manifest (``cpg_id``, ``chrom``, ``pos``)."""
        table = pa.table({"cpg_id": self.cpg_ids, "chrom": self.chrom, "pos": self.pos})
        return table.group_by(["cpg_id", "chrom", "pos"]).aggregate([])


def read_manifest(path: str | Path, *, chrom_prefix: str = "") -> Manifest:
    """Read a probe manifest (Illumina's CSV with sections, or a plain CSV/TSV).

    ``chrom_prefix`` (e.g. ``"chr"``) is put before chromosome names that do not
    start with it, to match a reference that names them so (Illumina's 450k
    manifest writes ``1``, UCSC's hg19/hg38 FASTA ``chr1``).
    """
    import pyarrow.csv as pacsv

    path = Path(path)
    with open_bytes(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
        lines = iter(text)
        first = next(lines, "")
        header_line = 1
        if first.startswith(("Illumina", "[Heading]")):  # Illumina's sectioned manifest: the table follows [Assay]
            for number, line in enumerate(lines, start=2):
                if line.startswith("[Assay]"):
                    header_line = number
                    break
            else:
                raise ImportFormatError(path, None, None, "an Illumina manifest without an [Assay] section")
            first = next(lines, "")
            header_line += 1
        body = [first]
        for line in lines:
            if line.startswith("[Controls]"):
                break
            body.append(line)
    delimiter = _delimiter(first)
    names = _split_header(first.rstrip("\r\n"), delimiter)

    def pick(choices: tuple[str, ...], what: str) -> str:
        found = next((c for c in choices if c in names), None)
        if found is None:
            raise ImportFormatError(
                path, header_line, None, f"no {what} column: expected one of {list(choices)} in the header {names[:12]}"
            )
        return found

    probe, chrom, pos = (
        pick(_PROBE_COLUMNS, "probe id"),
        pick(_CHROM_COLUMNS, "chromosome"),
        pick(_POS_COLUMNS, "position"),
    )
    try:
        table = pacsv.read_csv(
            io.BytesIO("".join(body).encode()),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                include_columns=[probe, chrom, pos],
                column_types={probe: pa.string(), chrom: pa.string(), pos: pa.float64()},
                null_values=list(NULL_VALUES) + ["0"],
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as err:
        raise ImportFormatError(
            path, None, None, f"cannot read the manifest's {probe}, {chrom}, {pos} columns: {err}"
        ) from None
    placed = pc.and_(pc.is_valid(table[chrom]), pc.is_valid(table[pos]))
    placed = pc.and_(placed, pc.not_equal(table[chrom], ""))
    kept = table.filter(placed)
    position = kept[pos].to_numpy()
    bad = (position < 1) | (position != np.floor(position))
    if bad.any():
        raise ImportFormatError(
            path,
            None,
            None,
            f"probe {kept[probe][int(np.argmax(bad))]} has position "
            f"{position[int(np.argmax(bad))]}; {pos} must be a 1-based whole number",
        )
    counts = pc.value_counts(kept[probe])
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        raise ImportFormatError(
            path, None, None, f"probe {repeated[0]['values']} has several rows; a manifest places each probe once"
        )
    chrom_values = kept[chrom].combine_chunks()
    if chrom_prefix:
        chrom_values = pc.if_else(
            pc.starts_with(chrom_values, chrom_prefix),
            chrom_values,
            pc.binary_join_element_wise(pa.scalar(chrom_prefix), chrom_values, ""),
        )
    return Manifest(
        kept[probe].combine_chunks().cast(pa.string()),
        chrom_values.cast(pa.string()),
        pa.array(position.astype(np.int64)),
        unplaced=table.num_rows - kept.num_rows,
    )


class ArrayBetas:
    """``array``: a probes x samples beta matrix (CSV/TSV) placed by a probe manifest."""

    name: ClassVar[str] = "array"
    convention: ClassVar[str] = (
        "probe ids placed by the manifest: CHR/MAPINFO (or chrom/pos) is the 1-based C "
        "on +; betas in [0, 1], NA = missing; no coverage"
    )
    suffixes: ClassVar[tuple[str, ...]] = (".csv", ".tsv", ".txt")
    multi_sample: ClassVar[bool] = True
    position_column: ClassVar[tuple[int, str]] = (1, "probe")

    def __init__(self, manifest: Manifest, *, duplicates: str = "mean") -> None:
        if duplicates not in DUPLICATE_CHOICES:
            raise ValueError(f"duplicates={duplicates!r}; expected one of {DUPLICATE_CHOICES}")
        self.manifest = manifest
        self.duplicates = duplicates
        ids = manifest.cpg_ids
        # CpGs with several probes: their values are collected aside and averaged at the end.
        counts = pc.value_counts(ids)
        shared = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        self._shared = pc.is_in(ids, value_set=shared).to_numpy(zero_copy_only=False)
        self._cpg_ids = ids
        # one hash table of the probe ids for the whole matrix (pyarrow's index_in would build one per batch)
        self._probe_index = pd.Index(manifest.probe_ids.to_numpy(zero_copy_only=False))

    def layout(self, path: Path) -> Layout:
        header = head_lines(path, 1)
        return Layout(header_lines=1, delimiter=_delimiter(header[0] if header else ""), quoted=True)

    def samples(self, path: Path) -> list[str]:
        """The sample ids of a matrix: its header after the probe column."""
        header = head_lines(path, 1)
        if not header:
            raise ImportFormatError(path, 1, None, "empty file: expected a header '<probe>, sample, sample, ...'")
        names = _split_header(header[0], self.layout(path).delimiter)
        if len(names) < 2:
            raise ImportFormatError(path, 1, None, "the header names no sample: expected '<probe>, sample, ...'")
        return [n.strip() for n in names[1:]]

    def sites(self, path: Path, counts: CallCounts, reference: ReferenceSites | None = None) -> Iterator[pa.Table]:
        """Stream long rows (``sample_id``, ``cpg_id``, ``beta``) of one matrix; ``counts`` is updated."""
        samples = self.samples(path)
        columns = [Column("probe", 0, "probe id", pa.string())] + [
            Column(f"s{j}", j + 1, f"sample {s}", pa.float64()) for j, s in enumerate(samples)
        ]
        seen = np.zeros(len(self.manifest), dtype=bool)
        on_axis = (
            reference.contains(self.manifest.chrom, self.manifest.pos.to_numpy())
            if reference is not None and len(reference)
            else None
        )
        shared_parts: list[pa.Table] = []
        for first, batch in read_delimited(
            path, columns, self.layout(path), null_values=NULL_VALUES, exact_fields=len(samples) + 1
        ):
            index = self._probe_index.get_indexer(batch.column("probe").to_numpy(zero_copy_only=False))
            placed = index >= 0
            counts.unplaced += int((~placed).sum()) * len(samples)
            rows = np.flatnonzero(placed)
            probe_index = index[placed].astype(np.int64)
            repeated = seen[probe_index] | (np.bincount(probe_index, minlength=len(seen))[probe_index] > 1)
            if repeated.any():
                raise RowError(
                    first + int(rows[np.argmax(repeated)]),
                    1,
                    "this probe appears twice in the matrix",
                    column_name="probe id",
                )
            seen[probe_index] = True
            shared = self._shared[probe_index]
            ids = self._cpg_ids.take(pa.array(probe_index))
            for j, sample in enumerate(samples):
                values = batch.column(f"s{j}").to_numpy(zero_copy_only=False)[rows]
                present = ~np.isnan(values)
                bad = present & ((values < 0) | (values > 1))
                if bad.any():
                    raise RowError(
                        first + int(rows[np.argmax(bad)]),
                        j + 2,
                        "a beta must lie within [0, 1]",
                        column_name=f"sample {sample}",
                    )
                counts.records += len(values)
                counts.missing += int((~present).sum())
                if on_axis is not None:
                    counts.off_axis += int((present & ~on_axis[probe_index]).sum())
                keep = present & ~shared
                part = pa.table(
                    {
                        "sample_id": pa.repeat(pa.scalar(sample), int(keep.sum())),
                        "cpg_id": ids.filter(pa.array(keep)),
                        "beta": pa.array(values[keep]),
                    }
                )
                if (present & shared).any():
                    aside = present & shared
                    shared_parts.append(
                        pa.table(
                            {
                                "sample_id": pa.repeat(pa.scalar(sample), int(aside.sum())),
                                "cpg_id": ids.filter(pa.array(aside)),
                                "beta": pa.array(values[aside]),
                            }
                        )
                    )
                counts.sites += part.num_rows
                yield part
        if shared_parts:
            yield self._merge_shared(path, pa.concat_tables(shared_parts), counts)

    def _merge_shared(self, path: Path, rows: pa.Table, counts: CallCounts) -> pa.Table:
        grouped = rows.group_by(["sample_id", "cpg_id"]).aggregate([("beta", "mean"), ("beta", "count")])
        if self.duplicates == "error":
            several = grouped.filter(pc.greater(grouped["beta_count"], 1))
            if several.num_rows:
                raise ImportFormatError(
                    path,
                    None,
                    None,
                    f"several probes measure CpG {several['cpg_id'][0]} "
                    f"(sample {several['sample_id'][0]}); pass duplicates='mean' to average them",
                )
        counts.sites += grouped.num_rows
        return pa.table({"sample_id": grouped["sample_id"], "cpg_id": grouped["cpg_id"], "beta": grouped["beta_mean"]})
