"""The sample sheet: which file is which sample, and each sample's metadata.

A CSV with a header.  ``sample_id`` is required; ``file`` (optional) names each
sample's input file, relative to the sheet's folder or absolute; ``batch_id``
(optional) lets one sheet serve several batches (only the rows of the batch
being imported are used).  Every other column (``age``, ``sex``, ...) becomes a
column of ``sample_batch_map``, typed as the CSV reads it (whole numbers,
decimals, true/false, text); a column the table lacks is added to it.

Without a ``file`` column, or without a sheet, a file's sample id is its name
without compression and format suffixes (``S01.bismark.cov.gz`` -> ``S01``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.errors import DataError
from xr_methyl.importers.base import Format, ImportFormatError
from xr_methyl.warehouse import check_ids

_COMPRESSION_SUFFIXES = (".gz", ".bgz", ".bz2", ".zst")
_RESERVED = ("sample_id", "file", "batch_id")


@dataclass(frozen=True)
class SampleSheet:
    """The rows of one batch: ``sample_id``, metadata columns, and the files if the sheet names them."""

    path: Path
    rows: pa.Table  #: sample_id + metadata columns
    files: dict[str, Path] | None  #: sample_id -> file (resolved), when the sheet has a ``file`` column

    @property
    def sample_ids(self) -> list[str]:
        return self.rows["sample_id"].to_pylist()

    @property
    def metadata_schema(self) -> pa.Schema:
        return pa.schema([f for f in self.rows.schema if f.name != "sample_id"])


def _metadata_type(dtype: pa.DataType) -> pa.DataType:
    """Whole numbers, decimals and booleans keep their type; anything else (dates, empty columns) is text."""
    if pa.types.is_integer(dtype):
        return pa.int64()
    if pa.types.is_floating(dtype):
        return pa.float64()
    if pa.types.is_boolean(dtype):
        return pa.bool_()
    return pa.string()


def read_sample_sheet(path: str | os.PathLike, *, batch_id: str) -> SampleSheet:
    """Read a sample sheet and keep the rows of ``batch_id`` (all rows if it has no ``batch_id`` column)."""
    import pyarrow.csv as pacsv

    path = Path(path)
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as err:
        raise ImportFormatError(path, None, None, f"cannot read the sample sheet: {err}") from None
    table = table.rename_columns([name.strip() for name in table.column_names])
    if "sample_id" not in table.column_names:
        raise ImportFormatError(
            path,
            1,
            None,
            f"no sample_id column (columns: {table.column_names}); a sample "
            "sheet needs sample_id, and may have file, batch_id and metadata columns",
        )
    if "batch_id" in table.column_names:
        table = table.filter(pc.equal(table["batch_id"].cast(pa.string()), batch_id))
        if table.num_rows == 0:
            raise ImportFormatError(path, None, None, f"no row of batch {batch_id!r} in the batch_id column")
    ids = table["sample_id"].cast(pa.string()).to_pylist()
    if None in ids:
        raise ImportFormatError(path, ids.index(None) + 2, None, "empty sample_id")
    try:
        check_ids(ids)
    except DataError as err:
        raise ImportFormatError(path, None, None, str(err)) from None
    repeated = sorted({s for s in ids if ids.count(s) > 1})
    if repeated:
        raise ImportFormatError(
            path, None, None, f"sample id(s) {repeated[:10]} have several rows; keep one per sample"
        )
    files = None
    if "file" in table.column_names:
        names = table["file"].cast(pa.string()).to_pylist()
        if None in names:
            raise ImportFormatError(path, None, None, f"sample {ids[names.index(None)]!r} has an empty file column")
        files = {s: (path.parent / n).resolve() for s, n in zip(ids, names)}
    columns = {"sample_id": pa.array(ids, pa.string())}
    for name in table.column_names:
        if name not in _RESERVED:
            columns[name] = table[name].cast(_metadata_type(table[name].type))
    return SampleSheet(path=path, rows=pa.table(columns), files=files)


def sample_id_from_name(path: Path, fmt: Format) -> str:
    """A file's sample id when nothing else names it: its name without compression and format suffixes."""
    name = path.name
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in fmt.suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name


def assign_samples(
    files: Sequence[str | os.PathLike], fmt: Format, sheet: SampleSheet | None
) -> list[tuple[Path, str]]:
    """(file, sample id) of each input of a one-sample-per-file format.

    Files come from ``files``, or from the sheet's ``file`` column when none are
    given.  Every file must have a row in the sheet (when there is one), and no
    two files may be the same sample.
    """
    paths = [Path(f) for f in files]
    if not paths:
        if sheet is None or sheet.files is None:
            raise ValueError("no input files: name them, or give a sample sheet with a file column")
        pairs = [(p, s) for s, p in sheet.files.items()]
    elif sheet is not None and sheet.files is not None:
        by_path = {p: s for s, p in sheet.files.items()}
        by_name: dict[str, list[str]] = {}
        for s, p in sheet.files.items():
            by_name.setdefault(p.name, []).append(s)
        pairs = []
        for p in paths:
            sample = by_path.get(p.resolve())
            if sample is None and len(by_name.get(p.name, [])) == 1:
                sample = by_name[p.name][0]
            if sample is None:
                raise ImportFormatError(
                    sheet.path, None, None, f"no row of the sample sheet names the file {str(p)!r} in its file column"
                )
            pairs.append((p, sample))
    else:
        pairs = [(p, sample_id_from_name(p, fmt)) for p in paths]
        if sheet is not None:
            known = set(sheet.sample_ids)
            unknown = [(str(p), s) for p, s in pairs if s not in known]
            if unknown:
                raise ImportFormatError(
                    sheet.path,
                    None,
                    None,
                    f"no row for sample {unknown[0][1]!r} (from the file "
                    f"name {unknown[0][0]!r}); add it, or add a file column naming each file",
                )
    check_ids([s for _, s in pairs])
    seen: dict[str, Path] = {}
    for p, s in pairs:
        if s in seen:
            raise DataError(
                f"files {str(seen[s])!r} and {str(p)!r} are both sample {s!r}; one file per sample "
                "(concatenate per-chromosome files first)"
            )
        seen[s] = p
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"input file(s) not found: {missing[:5]}")
    return pairs
