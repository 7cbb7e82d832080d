"""Long rows -> one dense wide block: pure numpy, no I/O.

The loader feeds a :class:`WideBlock` with already-located rows: for each long
row its sample row, its CpG column and its value.  Locating (strings ->
positions) is the expensive part and lives in :mod:`xr_methyl.ingest.locate`; here
each record batch costs a few vectorised numpy passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xr_methyl.errors import DataError
from xr_methyl.store.layout import FILL, fill_missing


def scatter(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
    """Set ``out[rows[i], cols[i]] = values[i]`` for every i, in one vectorised step.

    With repeated (row, col) pairs the last value wins; :class:`WideBlock`
    detects repeats separately.
    """
    out[rows, cols] = values


class WideBlock:
    """A (samples x CpGs) block of one value table, filled record batch by record batch.

    Parameters
    ----------
    table
        ``"beta"`` (float32, NaN = missing, values in [0, 1]) or ``"coverage"``
        (unsigned ints, 0 = no coverage, values within ``dtype``).
    sample_ids
        The block's samples, one per row, used to name the sample in errors.
    n_cpgs
        Width of the block (the store's CpG axis).
    dtype
        Dtype of the block; the coverage dtype of the store for ``"coverage"``.
    """

    def __init__(self, table: str, sample_ids: Sequence[str], n_cpgs: int, dtype: np.dtype | str = "float32") -> None:
        if table not in FILL:
            raise ValueError(f"table {table!r}: expected one of {', '.join(FILL)}")
        self.table = table
        self.sample_ids = list(sample_ids)
        self.dtype = np.dtype(dtype)
        if table == "beta" and self.dtype != np.float32:
            raise ValueError(f"beta blocks are float32, not {self.dtype}")
        if table == "coverage" and self.dtype.kind != "u":
            raise ValueError(f"coverage blocks hold unsigned integers, not {self.dtype}")
        self.values = np.full((len(self.sample_ids), n_cpgs), FILL[table], dtype=self.dtype)
        # Marks cells already set, to catch two rows for one (sample, CpG).
        self._seen = np.zeros(self.values.shape, dtype=bool)
        self.n_rows = 0

    def add(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> None:
        """Scatter one record batch of located rows into the block.

        ``values`` may be float (NaN marks a NULL) or integer.  A NULL or NaN
        is stored as missing (see :func:`fill_missing`); out-of-range, infinite
        and non-integral values raise :class:`DataError` naming a sample.
        """
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        values = np.asarray(values)
        if not (len(rows) == len(cols) == len(values)):
            raise ValueError(f"rows, cols and values differ in length: {len(rows)}, {len(cols)}, {len(values)}")
        if len(rows) == 0:
            return
        self._check_values(rows, values)
        scatter(self.values, rows, cols, fill_missing(self.table, values).astype(self.dtype, copy=False))
        self._seen[rows, cols] = True
        self.n_rows += len(rows)

    def finish(self) -> np.ndarray:
        """Return the block, after checking that no (sample, CpG) had two rows."""
        filled = int(np.count_nonzero(self._seen))
        if filled != self.n_rows:
            raise DataError(
                f"{self.table}: {self.n_rows - filled} warehouse row(s) repeat a (sample, cpg) pair among samples "
                f"{_short(self.sample_ids)}; each sample has at most one row per CpG"
            )
        self._seen = np.zeros((0, 0), dtype=bool)
        return self.values

    def _check_values(self, rows: np.ndarray, values: np.ndarray) -> None:
        # NaN (a NULL or NaN in the warehouse) is missing, not bad: every comparison below is False for it.
        with np.errstate(invalid="ignore"):
            if self.table == "beta":
                bad = (values < 0) | (values > 1)  # -inf and +inf too
                rule = "beta must lie within [0, 1] (NULL or NaN is stored as missing)"
            else:
                top = np.iinfo(self.dtype).max
                bad = (values < 0) | (values > top)
                if values.dtype.kind == "f":
                    bad |= np.floor(values) < values  # a fraction
                rule = (
                    f"coverage must be a whole number within [0, {top}] (the store's {self.dtype} coverage; "
                    "NULL or NaN is stored as 0)"
                )
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(
                f"{self.table}: {int(bad.sum())} value(s) out of range, e.g. {values[first]!r} for sample "
                f"{self.sample_ids[rows[first]]!r}; {rule}"
            )


def _short(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(s) for s in ids[:5])
    return f"{shown}, ... ({len(ids)} in all)" if len(ids) > 5 else shown
