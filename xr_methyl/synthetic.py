"""A realistic synthetic cohort, written into a :class:`~xr_methyl.warehouse.LocalWarehouse`.

The data look like whole-genome bisulfite sequencing in a long warehouse:

* samples on plates (batches) with ``age`` and ``sex`` metadata;
* CpGs on a few chromosomes at increasing positions;
* sparse coverage: each sample misses its own random 5-30 % of CpGs, which
  then have no row at all;
* bimodal betas (most CpGs near 0 or near 1) and coverage >= 1;
* a few NULL betas (0.2 % of rows by default) whose coverage row is kept, as
  pipelines write them for a call that failed;
* a set of age-associated CpGs whose beta drifts linearly with age;
* rows shuffled within each batch, as warehouse files are not sorted by CpG.

Everything is vectorised with numpy and pyarrow: 1,000,000 CpGs x 32 samples
(about 27 M rows per value table) is meant to build in well under a minute.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xr_methyl.warehouse.iceberg import IcebergWarehouse
from xr_methyl.warehouse.local import LocalWarehouse

__all__ = ["Cohort", "build_cohort"]

_MAX_PLATE = 96
_AGE_RANGE = (20.0, 80.0)
_AGE_CENTRE = 50.0
_AGE_SLOPE = (0.004, 0.008)  # |d beta / d year|
_AGE_NOISE = 0.02
_SAMPLE_NOISE = 0.3  # sd of per-sample noise on the logit scale
_MEAN_DEPTH = 15.0
_DEPTH_DISPERSION = 2.0  # negative binomial "n": small = overdispersed, like real WGBS depth


@dataclass(frozen=True)
class Cohort:
    """What was designed into a synthetic cohort (ground truth for tests).

    Holds the design only; the values themselves are in the warehouse and
    must be read back from it.

    Attributes
    ----------
    warehouse
        The warehouse the cohort was written to.
    sample_ids, batch_ids
        In creation order; ``batches`` maps each batch to its samples.
    cpg_ids
        Every CpG, in genome order (the order of the ``cpgs`` table).
    age_cpg_ids
        CpGs whose beta drifts linearly with age, in genome order.
    ages
        Age in years of each sample.
    batches
        ``{batch_id: [sample_id, ...]}``.
    missing_fractions
        Fraction of CpGs each sample has no row for.
    null_betas
        Number of rows of each sample whose beta is NULL (their coverage row is kept).
    """

    warehouse: IcebergWarehouse
    sample_ids: list[str]
    batch_ids: list[str]
    cpg_ids: pa.Array
    age_cpg_ids: list[str]
    ages: dict[str, float]
    batches: dict[str, list[str]]
    missing_fractions: dict[str, float]
    null_betas: dict[str, int]


def _ids(prefix: str, n: int, min_width: int) -> list[str]:
    width = max(min_width, len(str(max(n - 1, 0))))
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _check_args(
    n_samples: int,
    n_cpgs: int,
    batch_size: int,
    n_chroms: int,
    n_age_cpgs: int,
    missing_fraction: tuple[float, float],
    null_beta_fraction: float,
) -> None:
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; need at least 1 sample")
    if not 1 <= n_chroms <= n_cpgs:
        raise ValueError(f"n_chroms={n_chroms!r}, n_cpgs={n_cpgs!r}; need 1 <= n_chroms <= n_cpgs")
    if not 1 <= batch_size <= _MAX_PLATE:
        raise ValueError(f"batch_size={batch_size!r}; a plate holds 1 to {_MAX_PLATE} samples")
    if not 0 <= n_age_cpgs <= n_cpgs:
        raise ValueError(f"n_age_cpgs={n_age_cpgs!r}; need 0 <= n_age_cpgs <= n_cpgs={n_cpgs}")
    lo, hi = missing_fraction
    if not 0.0 <= lo <= hi < 1.0:
        raise ValueError(f"missing_fraction={missing_fraction!r}; need (low, high) with 0 <= low <= high < 1")
    if not 0.0 <= null_beta_fraction < 1.0:
        raise ValueError(f"null_beta_fraction={null_beta_fraction!r}; need 0 <= null_beta_fraction < 1")


def _design_cpgs(rng: np.random.Generator, n_cpgs: int, n_chroms: int) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """CpG ids, chromosome names and positions, in genome order."""
    counts = np.full(n_chroms, n_cpgs // n_chroms)
    counts[: n_cpgs % n_chroms] += 1
    chrom_index = np.repeat(np.arange(n_chroms, dtype=np.int32), counts)
    # Gaps of ~100 bp on average, like CpG spacing outside islands.
    gaps = 1 + rng.geometric(1 / 100, size=n_cpgs).astype(np.int64)
    total = np.cumsum(gaps)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    before_chrom = np.repeat(total[starts] - gaps[starts], counts)
    pos = 10_000 + total - before_chrom
    chrom_names = pa.array([f"chr{k + 1}" for k in range(n_chroms)], pa.string())
    chrom = chrom_names.take(pa.array(chrom_index))
    cpg_ids = pc.binary_join_element_wise(chrom, pa.array(pos).cast(pa.string()), ":")
    return cpg_ids, chrom, pos


def _cpg_means(rng: np.random.Generator, n_cpgs: int) -> np.ndarray:
    """Per-CpG mean beta: a bimodal mixture of Beta distributions."""
    component = rng.choice(3, size=n_cpgs, p=[0.6, 0.3, 0.1])
    a = np.array([12.0, 1.0, 4.0])[component]  # methylated, unmethylated, intermediate
    b = np.array([1.5, 15.0, 4.0])[component]
    return rng.beta(a, b)


def build_cohort(
    warehouse: IcebergWarehouse | str | os.PathLike,
    *,
    n_samples: int = 32,
    n_cpgs: int = 100_000,
    batch_size: int = 8,
    n_chroms: int = 5,
    n_age_cpgs: int = 300,
    missing_fraction: tuple[float, float] = (0.05, 0.30),
    null_beta_fraction: float = 0.002,
    seed: int = 0,
    shuffle_rows: bool = True,
    progress: bool = False,
) -> Cohort:
    """Create the tables of a new local warehouse and fill them with a synthetic cohort.

    Parameters
    ----------
    warehouse
        A :class:`LocalWarehouse` or its directory, or any
        :class:`~xr_methyl.warehouse.iceberg.IcebergWarehouse` (Glue, ...); its
        tables must not exist yet.
    n_samples, n_cpgs
        Size of the cohort.
    batch_size
        Samples per plate (at most 96); the last plate may be short.
    n_chroms
        Number of chromosomes (``chr1`` ...) the CpGs are spread over.
    n_age_cpgs
        Number of CpGs whose beta drifts linearly with age.
    missing_fraction
        ``(low, high)``: each sample misses a fraction drawn uniformly from
        this range of the CpGs (no row in either value table).
    null_beta_fraction
        Fraction of the remaining rows whose beta is NULL while their coverage
        row stays (a call that failed); 0 writes none.  Drawn from a random
        stream of its own, so the other values do not depend on it.
    seed
        Seed of the random generator; the same seed gives the same cohort.
    shuffle_rows
        Shuffle rows within each batch before writing.
    progress
        Show a progress bar over batches.

    Returns
    -------
    Cohort
        The design (ids, ages, age CpGs, ...), not the values.
    """
    _check_args(n_samples, n_cpgs, batch_size, n_chroms, n_age_cpgs, missing_fraction, null_beta_fraction)
    wh = warehouse if isinstance(warehouse, IcebergWarehouse) else LocalWarehouse(warehouse)
    rng = np.random.default_rng(seed)
    null_rng = np.random.default_rng([seed, 1])  # its own stream: the other values do not depend on it
    null_betas = np.zeros(n_samples, dtype=np.int64)

    # --- design: samples, batches, CpGs, age effects
    sample_ids = _ids("S", n_samples, 4)
    n_batches = math.ceil(n_samples / batch_size)
    batch_ids = _ids("B", n_batches, 3)
    batch_of_sample = np.arange(n_samples) // batch_size
    ages = rng.uniform(*_AGE_RANGE, size=n_samples)
    sexes = np.where(rng.random(n_samples) < 0.5, "F", "M")
    lo, hi = missing_fraction
    n_missing = np.clip(
        np.rint(rng.uniform(lo, hi, size=n_samples) * n_cpgs), math.ceil(lo * n_cpgs), math.floor(hi * n_cpgs)
    ).astype(np.int64)

    cpg_ids, chrom, pos = _design_cpgs(rng, n_cpgs, n_chroms)
    mean = np.clip(_cpg_means(rng, n_cpgs), 1e-4, 1 - 1e-4)
    logit_mean = np.log(mean / (1 - mean))
    age_cpgs = np.sort(rng.choice(n_cpgs, size=n_age_cpgs, replace=False))
    age_slot = np.full(n_cpgs, -1, dtype=np.int64)  # CpG -> its row in the age arrays
    age_slot[age_cpgs] = np.arange(n_age_cpgs)
    age_slope = rng.uniform(*_AGE_SLOPE, size=n_age_cpgs) * rng.choice([-1.0, 1.0], size=n_age_cpgs)
    age_intercept = rng.uniform(0.35, 0.65, size=n_age_cpgs)  # beta at age 50: stays clear of 0 and 1

    wh.create_tables(metadata_schema=pa.schema([("age", pa.float64()), ("sex", pa.string())]))
    wh.append("cpgs", pa.table({"cpg_id": cpg_ids, "chrom": chrom, "pos": pa.array(pos, pa.int64())}))
    sample_arr = pa.array(sample_ids, pa.string())
    wh.append(
        "sample_batch_map",
        pa.table(
            {
                "sample_id": sample_arr,
                "batch_id": pa.array([batch_ids[b] for b in batch_of_sample], pa.string()),
                "age": pa.array(ages, pa.float64()),
                "sex": pa.array(sexes.tolist(), pa.string()),
            }
        ),
    )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_batches, desc="synthetic cohort", unit="batch")
    # --- values, one batch at a time (one append per value table per batch)
    for b, batch_id in enumerate(batch_ids):
        members = np.flatnonzero(batch_of_sample == b)
        cpg_parts, sample_parts = [], []
        for s in members:  # a loop over samples (<= 96), never over rows
            present = np.ones(n_cpgs, dtype=bool)
            present[rng.choice(n_cpgs, size=n_missing[s], replace=False)] = False
            idx = np.flatnonzero(present)
            cpg_parts.append(idx)
            sample_parts.append(np.full(idx.size, s, dtype=np.int64))
        cpg = np.concatenate(cpg_parts)
        smp = np.concatenate(sample_parts)
        if shuffle_rows:
            order = rng.permutation(cpg.size)
            cpg, smp = cpg[order], smp[order]

        beta = 1.0 / (1.0 + np.exp(-(logit_mean[cpg] + _SAMPLE_NOISE * rng.standard_normal(cpg.size))))
        slot = age_slot[cpg]
        on_age = slot >= 0
        a = slot[on_age]
        beta[on_age] = (
            age_intercept[a]
            + age_slope[a] * (ages[smp[on_age]] - _AGE_CENTRE)
            + _AGE_NOISE * rng.standard_normal(a.size)
        )
        np.clip(beta, 0.0, 1.0, out=beta)
        p = _DEPTH_DISPERSION / (_DEPTH_DISPERSION + _MEAN_DEPTH - 1)
        coverage = 1 + rng.negative_binomial(_DEPTH_DISPERSION, p, size=cpg.size)
        null = null_rng.random(cpg.size) < null_beta_fraction
        null_betas += np.bincount(smp[null], minlength=n_samples)

        keys = {
            "batch_id": pa.repeat(pa.scalar(batch_id, pa.string()), cpg.size),
            "sample_id": sample_arr.take(pa.array(smp)),
            "cpg_id": cpg_ids.take(pa.array(cpg)),
        }
        wh.append("beta", pa.table({**keys, "beta": pa.array(beta, pa.float64(), mask=null)}))
        wh.append("coverage", pa.table({**keys, "coverage": pa.array(coverage, pa.int64())}))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    return Cohort(
        warehouse=wh,
        sample_ids=sample_ids,
        batch_ids=batch_ids,
        cpg_ids=cpg_ids,
        age_cpg_ids=cpg_ids.take(pa.array(age_cpgs)).to_pylist(),
        ages={s: float(a) for s, a in zip(sample_ids, ages)},
        batches={bid: [sample_ids[s] for s in np.flatnonzero(batch_of_sample == b)] for b, bid in enumerate(batch_ids)},
        missing_fractions={s: float(k) / n_cpgs for s, k in zip(sample_ids, n_missing)},
        null_betas={s: int(k) for s, k in zip(sample_ids, null_betas)},
    )
