"""Analysis of wide methylation matrices: masks, M-values and per-CpG feature selection.

Pure functions: they take and return xarray objects with dims ``(sample, cpg)``
and never touch a store (the ``ds.methyl`` accessor wires them to one).

Per-CpG statistics are computed out of core: the beta matrix is cut into
tasks of all samples x ``cpgs_per_task`` CpGs, each task computes its CpGs'
statistics with numpy and keeps only its own top ``k``, and the final top
``k`` is picked from those candidates.  Whatever dask scheduler is active runs
the tasks (threads by default, a ``dask.distributed`` cluster if a Client
exists).

Missing values are NaN.  Every statistic is *pairwise complete*: a CpG's
statistic uses the samples where both its beta and the target are present,
and is NaN (never selected) when fewer than ``min_samples`` remain or when
either side is constant over them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from numbers import Integral, Real
from typing import Literal

import numpy as np
import xarray as xr

__all__ = ["METHODS", "chunk_by_cpg", "feature_scores", "m_values", "mask", "nanrank", "select_features"]

Method = Literal["pearson", "spearman", "variance"]
METHODS: tuple[str, ...] = ("pearson", "spearman", "variance")
_STAT_NAME = {"pearson": "pearson_r", "spearman": "spearman_rho", "variance": "variance"}
# float64 bytes of beta per task: the kernel holds a few copies of its block
_TASK_BYTES = 16 << 20


# -- masks and transforms --------------------------------------------------------------
def mask(beta: xr.DataArray, coverage: xr.DataArray, min_coverage: int) -> xr.DataArray:
    """Set the beta values read from fewer than ``min_coverage`` reads to NaN.

    Parameters
    ----------
    beta
        Beta values, NaN where missing.
    coverage
        Read counts aligned with ``beta`` (0 where missing).
    min_coverage
        The smallest coverage kept; an integer >= 0 (0 and 1 keep every value).

    Returns
    -------
    xarray.DataArray
        ``beta`` with low-coverage cells set to NaN; lazy if the inputs are.
    """
    k = _check_int("min_coverage", min_coverage, low=0)
    if beta.sizes != coverage.sizes:
        raise ValueError(f"beta {dict(beta.sizes)} and coverage {dict(coverage.sizes)} must have the same shape")
    out = beta.where(coverage >= k)
    out.attrs = {**beta.attrs, "min_coverage": k}
    return out.rename(beta.name)


def m_values(beta: xr.DataArray, alpha: float = 0.01) -> xr.DataArray:
    """M-values: ``log2((beta + alpha) / (1 - beta + alpha))``.

    Parameters
    ----------
    beta
        Beta values in [0, 1], NaN where missing (NaN stays NaN).
    alpha
        Offset > 0 that keeps beta = 0 and beta = 1 finite: they map to
        ``-log2(1/alpha + 1)`` and ``+log2(1/alpha + 1)``.

    Returns
    -------
    xarray.DataArray
        Named ``m_values``, same dims, coords and dtype as ``beta``; lazy if it is.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha={alpha!r}: expected a finite number > 0 (0.01 is usual for beta values)")
    a = np.asarray(alpha, dtype=beta.dtype if beta.dtype.kind == "f" else np.float64)
    out = np.log2((beta + a) / ((1 - beta) + a))
    out.attrs = {"long_name": "M-value", "alpha": float(alpha)}
    return out.rename("m_values")


# -- ranks and per-block statistics (numpy) ---------------------------------------------
def nanrank(a: np.ndarray) -> np.ndarray:
    """Rank each column of a 2-D array over its non-NaN entries, ties averaged.

    Ranks run from 1 to the number of non-NaN entries of the column (as
    ``scipy.stats.rankdata(..., method="average", nan_policy="omit")``);
    NaN entries keep NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"nanrank takes a 2-D array, got {a.ndim} dimension(s)")
    n = a.shape[0]
    if n == 0:
        return a.copy()
    order = np.argsort(a, axis=0, kind="stable")  # NaN sort last
    s = np.take_along_axis(a, order, axis=0)
    idx = np.arange(n)[:, None]
    starts = np.ones(s.shape, dtype=bool)
    starts[1:] = s[1:] != s[:-1]  # NaN != NaN: NaNs never join a group
    ends = np.ones(s.shape, dtype=bool)
    ends[:-1] = starts[1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=0)
    last = np.minimum.accumulate(np.where(ends, idx, n)[::-1], axis=0)[::-1]
    ranks = (first + last) / 2.0 + 1.0
    ranks[np.isnan(s)] = np.nan
    out = np.empty_like(ranks)
    np.put_along_axis(out, order, ranks, axis=0)
    return out


def _column_stats(beta: np.ndarray, target: np.ndarray | None, method: str, min_samples: int) -> np.ndarray:
    """Statistic and number of samples used, per column of ``beta``: shape (2, n_columns)."""
    x = np.asarray(beta, dtype=np.float64)
    present = ~np.isnan(x)
    if target is not None:
        present &= ~np.isnan(target)[:, None]
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "variance":
            score = _centred(x, present, n)[1] / (n - 1)
            defined = n >= min_samples
        else:
            y = np.where(present, target[:, None], np.nan)
            x = np.where(present, x, np.nan)
            if method == "spearman":
                x, y = nanrank(x), nanrank(y)
            dx, sxx = _centred(x, present, n)
            dy, syy = _centred(y, present, n)
            score = np.clip((dx * dy).sum(axis=0) / np.sqrt(sxx * syy), -1.0, 1.0)
            # constant sides are tested exactly: a rounding-level variance would give noise
            defined = (n >= min_samples) & ~_constant(x, present) & ~_constant(y, present)
    score = np.where(defined, score, np.nan)
    return np.stack([score, n.astype(np.float64)])


def _centred(x: np.ndarray, present: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deviations from the column means (0 where absent) and their sums of squares."""
    mean = np.where(present, x, 0.0).sum(axis=0) / n
    d = np.where(present, x - mean, 0.0)
    return d, (d * d).sum(axis=0)


def _constant(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    hi = np.where(present, x, -np.inf).max(axis=0, initial=-np.inf)
    lo = np.where(present, x, np.inf).min(axis=0, initial=np.inf)
    return ~(hi > lo)


def _top(index: np.ndarray, score: np.ndarray, n: np.ndarray, k: int, by_abs: bool) -> np.ndarray:
    """The best ``k`` defined scores as rows (CpG index, score, n); ties go to the lower index."""
    valid = ~np.isnan(score)
    index, score, n = index[valid], score[valid], n[valid]
    # scores equal to 12 decimals are ties (so rounding noise cannot reorder them)
    key = np.round(np.abs(score) if by_abs else score, 12)
    best = np.lexsort((index, -key))[:k]
    return np.stack([index[best], score[best], n[best]]).astype(np.float64)


def _block_top(stats: np.ndarray, offset: int, k: int, by_abs: bool) -> np.ndarray:
    """:func:`_top` of one task's statistics, indexed along the whole CpG axis."""
    return _top(np.arange(offset, offset + stats.shape[1]), stats[0], stats[1], k, by_abs)


# -- feature selection ------------------------------------------------------------------
def feature_scores(
    beta: xr.DataArray,
    target: xr.DataArray | np.ndarray | Sequence[float] | None = None,
    *,
    method: Method = "pearson",
    coverage: xr.DataArray | None = None,
    min_coverage: int | None = None,
    min_samples: int = 3,
    cpgs_per_task: int | None = None,
) -> xr.Dataset:
    """Per-CpG statistic against ``target``, lazily, for every CpG.

    Parameters
    ----------
    beta
        Beta values with dims ``(sample, cpg)``; NaN = missing.  Lazy backend
        arrays are read straight into the tasks; dask arrays are rechunked.
    target
        One value per sample (NaN = unknown, the sample is left out): an array
        in the order of ``beta.sample``, or a DataArray on ``sample`` (aligned
        by label).  Booleans and two-level strings (e.g. sex "F"/"M") become
        0/1, the levels in sorted order.  Must be None for ``"variance"``.
    method
        ``"pearson"`` (correlation), ``"spearman"`` (correlation of ranks,
        ranked within each CpG over the samples present, ties averaged) or
        ``"variance"`` (sample variance, ddof=1; no target).
    coverage, min_coverage
        If ``min_coverage`` is given, cells of ``beta`` whose ``coverage`` is
        below it count as missing (as :func:`mask`, inside each task).
    min_samples
        The fewest samples (present for both sides) a statistic needs; at least 2.
    cpgs_per_task
        CpGs per dask task (all samples each); default about 16 MiB of float64.

    Returns
    -------
    xarray.Dataset
        On dim ``cpg`` (with its coordinates): ``score`` (the statistic, NaN
        where undefined) and ``n_samples`` (samples used), both dask-backed.
    """
    method = _check_method(method)
    stats = _stats(beta, target, method, min_samples, cpgs_per_task, coverage, min_coverage)
    coords = {name: c.variable for name, c in beta.coords.items() if c.dims == ("cpg",)}
    name = _STAT_NAME[method]
    score = xr.DataArray(stats[0], dims="cpg", coords=coords, attrs={"long_name": name, "method": method})
    n_used = xr.DataArray(stats[1].astype(np.int64), dims="cpg", coords=coords)
    return xr.Dataset({"score": score, "n_samples": n_used})


def select_features(
    beta: xr.DataArray,
    target: xr.DataArray | np.ndarray | Sequence[float] | None,
    k: int,
    *,
    method: Method = "pearson",
    coverage: xr.DataArray | None = None,
    min_coverage: int | None = None,
    min_samples: int = 3,
    cpgs_per_task: int | None = None,
) -> xr.DataArray:
    """The ``k`` CpGs most associated with ``target`` (or most variable), with their scores.

    Correlations rank by absolute value, variance by value; scores equal to
    12 decimals keep genome order.  CpGs whose statistic is undefined (too few samples, a
    constant side) are never selected, so fewer than ``k`` may come back.
    Only the candidates of each task reach the caller: memory stays bounded
    by the task size, whatever the number of CpGs.

    Parameters
    ----------
    beta, target, method, coverage, min_coverage, min_samples, cpgs_per_task
        As for :func:`feature_scores`.
    k
        How many CpGs to return; 1 <= k <= the number of CpGs.

    Returns
    -------
    xarray.DataArray
        In memory, on dim ``cpg`` (best first), named after the statistic
        (``pearson_r``, ``spearman_rho``, ``variance``); coordinates ``cpg``,
        ``chrom``, ``pos`` (whatever ``beta`` has on cpg) and ``n_samples``.
    """
    import dask

    method = _check_method(method)
    k = _check_int("k", k, low=1)
    stats = _stats(beta, target, method, min_samples, cpgs_per_task, coverage, min_coverage)
    if k > stats.shape[1]:
        raise ValueError(f"k={k} but there are only {stats.shape[1]} CpGs to choose from")
    by_abs = method != "variance"
    offsets = np.concatenate([[0], np.cumsum(stats.chunks[1])[:-1]])
    blocks = stats.to_delayed().ravel()
    tasks = [dask.delayed(_block_top)(block, int(o), k, by_abs) for block, o in zip(blocks, offsets)]
    candidates = np.concatenate(dask.compute(*tasks), axis=1)
    top = _top(candidates[0], candidates[1], candidates[2], k, by_abs)
    index = top[0].astype(np.int64)
    coords = {name: ("cpg", c.values[index]) for name, c in beta.coords.items() if c.dims == ("cpg",)}
    coords["n_samples"] = ("cpg", top[2].astype(np.int64))
    attrs = {"method": method, "k": k, "min_samples": min_samples, "ranked_by": "absolute value" if by_abs else "value"}
    if min_coverage is not None:
        attrs["min_coverage"] = min_coverage
    return xr.DataArray(top[1], dims="cpg", coords=coords, name=_STAT_NAME[method], attrs=attrs)


def _stats(
    beta: xr.DataArray,
    target: object,
    method: str,
    min_samples: int,
    cpgs_per_task: int | None,
    coverage: xr.DataArray | None,
    min_coverage: int | None,
):
    """Lazy (2, n_cpgs) dask array: each CpG's statistic and number of samples used."""
    import dask.array as da

    min_samples = _check_int("min_samples", min_samples, low=2)
    _check_dims(beta)
    if method == "variance":
        if target is not None:
            raise ValueError("method='variance' ranks CpGs by their own spread and takes no target; pass target=None")
        y = None
    else:
        y = _target_values(beta, target)
    width = _task_width(beta, cpgs_per_task)
    data = chunk_by_cpg(beta, width).data
    if min_coverage is not None:
        min_coverage = _check_int("min_coverage", min_coverage, low=0)
        if coverage is None:
            raise ValueError(f"min_coverage={min_coverage} needs the coverage array (coverage=...)")
        if coverage.sizes != beta.sizes:
            raise ValueError(f"beta {dict(beta.sizes)} and coverage {dict(coverage.sizes)} must have the same shape")
        cov = chunk_by_cpg(coverage, width).data
        data = da.where(cov >= min_coverage, data, np.nan)
    return data.map_blocks(
        _column_stats,
        y,
        method,
        min_samples,
        dtype=np.float64,
        chunks=((2,), data.chunks[1]),
        meta=np.empty((0, 0), dtype=np.float64),
    )


# -- argument handling ------------------------------------------------------------------
def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r}: expected an integer >= {low}")
    if value < low:
        raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
    return int(value)


def _check_method(method: object) -> str:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(map(repr, METHODS))}")
    return str(method)


def _check_dims(beta: xr.DataArray) -> None:
    if set(beta.dims) != {"sample", "cpg"}:
        raise ValueError(f"expected beta with dims ('sample', 'cpg'), got {beta.dims}")


def _target_values(beta: xr.DataArray, target: object) -> np.ndarray:
    """The target as float64 in the order of ``beta.sample`` (NaN = left out)."""
    if target is None:
        raise ValueError("a correlation needs a target: a sample coordinate name (e.g. 'age') or one value per sample")
    n = beta.sizes["sample"]
    if isinstance(target, xr.DataArray):
        if target.dims != ("sample",):
            raise ValueError(f"target has dims {target.dims}; expected ('sample',)")
        if "sample" in target.coords and "sample" in beta.coords:
            labels = beta["sample"].to_index()
            missing = labels[~labels.isin(target["sample"].to_index())]
            if len(missing):
                raise KeyError(f"target has no value for {len(missing)} sample(s), e.g. {list(missing[:5])}")
            if not target["sample"].to_index().is_unique:
                raise ValueError("target has repeated sample labels; cannot align it to beta")
            target = target.sel(sample=labels)
        values = np.asarray(target.values)
    else:
        values = np.asarray(target)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(f"target has shape {values.shape}; expected one value per sample ({n},)")
    return _numeric(values)


def _numeric(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "b":
        return values.astype(np.float64)
    if values.dtype.kind in "iuf":
        out = values.astype(np.float64)
        if np.isinf(out).any():
            raise ValueError("target holds infinite values; use NaN for unknown ones")
        return out
    # categorical: exactly two levels become 0/1 (a point-biserial correlation)
    labels = [None if v is None or (isinstance(v, float) and np.isnan(v)) or v == "" else v for v in values]
    levels = sorted({v for v in labels if v is not None}, key=str)
    if len(levels) != 2:
        raise ValueError(
            f"target of dtype {values.dtype} has levels {levels[:10]}; a non-numeric target needs exactly two"
        )
    return np.array([np.nan if v is None else float(v == levels[1]) for v in labels])


def _task_width(beta: xr.DataArray, cpgs_per_task: int | None) -> int:
    if cpgs_per_task is None:
        width = max(256, _TASK_BYTES // (8 * max(beta.sizes["sample"], 1)))
    else:
        width = _check_int("cpgs_per_task", cpgs_per_task, low=1)
    return min(width, max(beta.sizes["cpg"], 1))


def chunk_by_cpg(array: xr.DataArray, cpgs_per_task: int | None = None) -> xr.DataArray:
    """``array`` (sample, cpg) as dask tasks that each hold every sample and a run of CpGs.

    A lazy backend array is read straight into these tasks; a dask one is
    rechunked.  Coordinates stay in memory.
    """
    width = _task_width(array, cpgs_per_task)
    # chunk the variable only: DataArray.chunk would turn the sample metadata into dask arrays too
    variable = array.variable.transpose("sample", "cpg").chunk({"sample": -1, "cpg": width})
    return array.transpose("sample", "cpg").copy(data=variable.data)


def resolve_target(ds: xr.Dataset, target: Hashable | object) -> object:
    """A sample coordinate given by name becomes that coordinate; anything else is returned as is."""
    if isinstance(target, str):
        if target not in ds.variables:
            on_sample = [str(c) for c in ds.coords if ds[c].dims == ("sample",) and c != "sample"]
            raise KeyError(f"target {target!r} is not a variable of this Dataset; sample coordinates: {on_sample}")
        if ds[target].dims != ("sample",):
            raise ValueError(f"target {target!r} has dims {ds[target].dims}; expected ('sample',)")
        return ds[target]
    return target
