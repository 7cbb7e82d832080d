"""From a format's calls to long rows: order check, strand resolution, strand merge, beta and coverage.

Pure functions of Arrow batches and a little state carried from one batch to
the next, so a file of any length passes in constant memory.  The state is what
the rules need across batch boundaries:

* **Order.** Each chromosome's records must form one block, positions strictly
  increasing within it (as Bismark, modkit, MethylDackel and methylKit write
  them).  That is what lets the two strands of a CpG be merged as adjacent
  rows, and it refuses duplicated records instead of summing them.
* **Strand merge.** ``strands="merge"`` (the default) adds the counts of the C on
  + (``pos``) and the C on - (``pos + 1``) of one CpG into one row; ``"+"`` or
  ``"-"`` keep only that strand's records (records that already cover both
  strands are kept either way).  The last CpG of a batch waits for the next
  batch, which may hold its other strand.
* **beta = methylated / (methylated + unmethylated)**, coverage = their sum; a
  site whose coverage is 0 gets no row (never a division by zero).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.importers.base import BOTH, CALLS, MINUS, PLUS, UNKNOWN, RowError
from xr_methyl.importers.ids import cpg_ids

STRAND_CHOICES = ("merge", "+", "-")

#: The long rows a per-sample file becomes (before batch and sample ids are added).
SITES = pa.schema([("cpg_id", pa.string()), ("beta", pa.float64()), ("coverage", pa.int64())])


class ReferenceSites:
    """The reference CpG axis as sorted 1-based positions per chromosome, for membership tests.

    Holds 8 bytes per CpG (224 MiB for the 28 M CpGs of a human genome).
    """

    def __init__(self, positions: dict[str, np.ndarray]) -> None:
        self.positions = {}
        for chrom, pos in positions.items():
            pos = np.asarray(pos, dtype=np.int64)
            if len(pos) > 1 and not (pos[1:] >= pos[:-1]).all():  # the cpgs table is usually in genome order
                pos = np.sort(pos)
            self.positions[chrom] = pos

    @classmethod
    def from_batches(cls, batches: Iterable[pa.RecordBatch]) -> ReferenceSites:
        """Build from record batches with ``chrom`` and ``pos`` columns (any order)."""
        parts: dict[str, list[np.ndarray]] = {}
        for batch in batches:
            chrom = batch.column("chrom")
            encoded = chrom if pa.types.is_dictionary(chrom.type) else chrom.cast(pa.string()).dictionary_encode()
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            pos = batch.column("pos").to_numpy(zero_copy_only=False).astype(np.int64)
            for code, name in enumerate(encoded.dictionary.to_pylist()):
                parts.setdefault(name, []).append(pos[codes == code])
        return cls({c: np.concatenate(p) for c, p in parts.items()})

    def __len__(self) -> int:
        return sum(len(p) for p in self.positions.values())

    def contains(self, chrom: pa.Array, pos: np.ndarray) -> np.ndarray:
        """Boolean mask: is (``chrom[i]``, ``pos[i]``) a CpG of the reference."""
        out = np.zeros(len(pos), dtype=bool)
        encoded = chrom.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        for code, name in enumerate(encoded.dictionary.to_pylist()):
            known = self.positions.get(name)
            if known is None or not len(known):
                continue
            rows = np.flatnonzero(codes == code)
            where = np.minimum(np.searchsorted(known, pos[rows]), len(known) - 1)
            out[rows] = known[where] == pos[rows]
        return out


@dataclass
class CallCounts:
    """What became of a file's records."""

    records: int = 0  #: data rows read (after the format's own filter: context, modification code);
    #:                           for a beta matrix, its cells
    not_cpg: int = 0  #: cytosines of unknown strand that are on no reference CpG
    other_strand: int = 0  #: records of the strand not kept (strands="+" or "-")
    zero_coverage: int = 0  #: CpGs with no read: no row
    missing: int = 0  #: beta matrix cells without a value (NA)
    unplaced: int = 0  #: beta matrix cells of probes the manifest gives no locus
    sites: int = 0  #: rows written
    off_axis: int = 0  #: rows whose CpG is not on the reference axis (kept; counted to catch 0/1-based mix-ups)

    def add(self, other: CallCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class CallStream:
    """Turns one file's calls into long rows (``SITES``), batch by batch.

    Feed each batch to :meth:`push` and call :meth:`finish` at the end; both
    return the rows ready so far.  Raises :class:`RowError` on disorder, a
    duplicated record, or a strandless cytosine with no reference to resolve it.
    """

    strands: str = "merge"
    reference: ReferenceSites | None = None
    position_column: tuple[int, str] = (2, "position")
    counts: CallCounts = field(default_factory=CallCounts)
    _last: tuple[str, int] | None = None
    _done_chroms: set[str] = field(default_factory=set)
    _carry: pa.Table | None = None

    def __post_init__(self) -> None:
        if self.strands not in STRAND_CHOICES:
            raise ValueError(f"strands={self.strands!r}; expected one of {STRAND_CHOICES}")

    # -- checks -------------------------------------------------------------------------
    def _check_order(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        chrom = batch.column("chrom")
        encoded = chrom.dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = encoded.dictionary.to_pylist()
        pos = batch.column("pos").to_numpy()
        rows = batch.column("row").to_numpy()
        index, label = self.position_column

        def disorder(i: int, message: str) -> RowError:
            return RowError(
                int(rows[i]),
                index,
                message + "; records must come in one block per chromosome with "
                "strictly increasing positions, as the pipeline writes them (sort the file with "
                "`sort -k1,1 -k2,2n`, or fix the duplicate)",
                column_name=label,
            )

        same = codes[1:] == codes[:-1]
        bad = np.flatnonzero(same & (pos[1:] <= pos[:-1]))
        if bad.size:
            i = int(bad[0]) + 1
            raise disorder(i, f"{names[codes[i]]}:{pos[i]} comes after {names[codes[i - 1]]}:{pos[i - 1]}")
        starts = np.concatenate([[0], np.flatnonzero(~same) + 1])
        for i in starts:
            name = names[codes[i]]
            if self._last is not None and name == self._last[0]:
                if pos[i] <= self._last[1]:
                    raise disorder(int(i), f"{name}:{pos[i]} comes after {name}:{self._last[1]}")
                continue
            if name in self._done_chroms:
                raise disorder(int(i), f"chromosome {name!r} appears again after other chromosomes")
            if self._last is not None:
                self._done_chroms.add(self._last[0])
            self._last = (name, int(pos[i]))
        self._last = (names[codes[-1]], int(pos[-1]))

    # -- the steps ----------------------------------------------------------------------
    def _resolve(self, batch: pa.RecordBatch) -> pa.Table:
        """Strands of UNKNOWN records from the reference; records on no CpG dropped."""
        table = pa.Table.from_batches([batch])
        strand = table.column("strand").to_numpy()
        unknown = strand == UNKNOWN
        if not unknown.any():
            return table
        if self.reference is None or not len(self.reference):
            row = int(table.column("row").to_numpy()[np.flatnonzero(unknown)[0]])
            raise RowError(
                row,
                None,
                "this record gives a single cytosine without its strand, so it cannot be placed "
                "on its CpG without the reference: build the CpG axis first (`xr-methyl axis --fasta "
                "GENOME.fa` / build_axis(warehouse, fasta=...)), or import a CpG-merged file",
            )
        chrom = table.column("chrom").combine_chunks()
        pos = table.column("pos").to_numpy()
        plus = self.reference.contains(chrom, pos)
        minus = self.reference.contains(chrom, pos - 1)
        resolved = np.where(plus, PLUS, np.where(minus, MINUS, UNKNOWN)).astype(np.int8)
        strand = np.where(unknown, resolved, strand)
        keep = strand != UNKNOWN
        self.counts.not_cpg += int((~keep).sum())
        table = table.set_column(table.schema.get_field_index("strand"), "strand", pa.array(strand, pa.int8()))
        return table.filter(pa.array(keep))

    def _select_strand(self, table: pa.Table) -> pa.Table:
        if self.strands == "merge":
            return table
        strand = table.column("strand").to_numpy()
        keep = (strand == BOTH) | (strand == (PLUS if self.strands == "+" else MINUS))
        self.counts.other_strand += int((~keep).sum())
        return table.filter(pa.array(keep))

    @staticmethod
    def _to_cpg_positions(table: pa.Table) -> pa.Table:
        """``pos`` of every record becomes its CpG's position (the C on +)."""
        pos = table.column("pos").to_numpy() - (table.column("strand").to_numpy() == MINUS)
        return table.set_column(table.schema.get_field_index("pos"), "pos", pa.array(pos, pa.int64()))

    def _merge(self, table: pa.Table, *, final: bool) -> pa.Table:
        """Sum the records of each CpG (adjacent rows: the input is in order); keep the last CpG back."""
        if self._carry is not None:
            table = pa.concat_tables([self._carry, table])
            self._carry = None
        if table.num_rows == 0:
            return table
        chrom = table.column("chrom").combine_chunks().dictionary_encode().indices.to_numpy(zero_copy_only=False)
        pos = table.column("pos").to_numpy()
        starts = np.concatenate([[0], np.flatnonzero((chrom[1:] != chrom[:-1]) | (pos[1:] != pos[:-1])) + 1])
        if not final:  # the last CpG may continue in the next batch
            cut = int(starts[-1])
            self._carry = table.slice(cut)
            table = table.slice(0, cut)
            starts = starts[:-1]
            if table.num_rows == 0:
                return table
        if len(starts) == table.num_rows:
            return table
        methylated = np.add.reduceat(table.column("methylated").to_numpy(), starts)
        unmethylated = np.add.reduceat(table.column("unmethylated").to_numpy(), starts)
        first = table.take(pa.array(starts))
        first = first.set_column(first.schema.get_field_index("methylated"), "methylated", pa.array(methylated))
        return first.set_column(first.schema.get_field_index("unmethylated"), "unmethylated", pa.array(unmethylated))

    def _sites(self, table: pa.Table) -> pa.Table:
        methylated = table.column("methylated").to_numpy()
        coverage = methylated + table.column("unmethylated").to_numpy()
        covered = coverage > 0
        self.counts.zero_coverage += int((~covered).sum())
        if not covered.all():
            table = table.filter(pa.array(covered))
            methylated, coverage = methylated[covered], coverage[covered]
        chrom = table.column("chrom").combine_chunks()
        pos = table.column("pos").to_numpy()
        if self.reference is not None and len(self.reference):
            self.counts.off_axis += int((~self.reference.contains(chrom, pos)).sum())
        self.counts.sites += len(pos)
        return pa.table(
            {
                "cpg_id": cpg_ids(chrom, pos),
                "beta": pa.array(methylated / coverage, pa.float64()),
                "coverage": pa.array(coverage, pa.int64()),
            },
            schema=SITES,
        )

    # -- driving ------------------------------------------------------------------------
    def push(self, batch: pa.RecordBatch) -> pa.Table:
        """Take the next batch of calls (``CALLS``); return the rows complete so far."""
        self.counts.records += batch.num_rows
        self._check_order(batch)
        table = self._to_cpg_positions(self._select_strand(self._resolve(batch)))
        return self._sites(self._merge(table, final=False))

    def finish(self) -> pa.Table:
        """The rows still held back at the end of the file."""
        if self._carry is None:
            return SITES.empty_table()
        return self._sites(self._merge(self._carry.slice(0, 0), final=True))


def concat_counts(counts: Iterable[CallCounts]) -> CallCounts:
    total = CallCounts()
    for c in counts:
        total.add(c)
    return total


def strand_array(
    values: pa.Array, plus: str | tuple[str, ...], minus: str | tuple[str, ...], both: tuple[str, ...] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Strand codes from a strand column; also a mask of values that are none of the given spellings."""
    plus_set = (plus,) if isinstance(plus, str) else plus
    minus_set = (minus,) if isinstance(minus, str) else minus
    is_plus = pc.is_in(values, value_set=pa.array(plus_set)).to_numpy(zero_copy_only=False)
    is_minus = pc.is_in(values, value_set=pa.array(minus_set)).to_numpy(zero_copy_only=False)
    is_both = (
        pc.is_in(values, value_set=pa.array(both, pa.string())).to_numpy(zero_copy_only=False)
        if both
        else np.zeros(len(values), bool)
    )
    codes = np.where(is_plus, PLUS, np.where(is_minus, MINUS, BOTH)).astype(np.int8)
    return codes, ~(is_plus | is_minus | is_both)


def calls_batch(
    first_row: int,
    chrom: pa.Array,
    pos: np.ndarray,
    strand: np.ndarray,
    methylated: np.ndarray,
    unmethylated: np.ndarray,
    keep: np.ndarray | None = None,
) -> pa.RecordBatch:
    """A ``CALLS`` batch from columns of one parsed batch, keeping the rows of ``keep``."""
    rows = np.arange(first_row, first_row + len(pos), dtype=np.int64)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(rows),
            chrom,
            pa.array(pos, pa.int64()),
            pa.array(strand, pa.int8()),
            pa.array(methylated, pa.int64()),
            pa.array(unmethylated, pa.int64()),
        ],
        schema=CALLS,
    )
    return batch if keep is None or keep.all() else batch.filter(pa.array(keep))
