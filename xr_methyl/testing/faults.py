"""Crash safety by fault injection: kill ingesting processes at random moments, then check the store.

Run it with::

    python -m xr_methyl.testing.faults --trials 100          # about 5-10 minutes on 2 cores

Each trial starts 1 to ``--writers`` processes at once, each calling
``ensure`` on an overlapping random set of samples of a small synthetic
Iceberg cohort, and sends SIGKILL to most of them at a random moment of their
ingest.  Every few trials the store is deleted first, so that kills also land
in a concurrent ``MethylStore.create``.  After every trial it checks that

* the store opens (or, if it was being created, is absent or opens);
* the samples a reader sees are exactly those ``sample_ids.json`` commits,
  none committed earlier was lost, and none appeared that nobody asked for;
* every committed sample is bit-identical to the warehouse (an independent
  pandas pivot of the Iceberg tables), beta and coverage;
* ``verify_store`` finds no problem;
* every writer that was not killed returned exactly its samples;
* re-running the same ``ensure`` in this process completes it, and afterwards
  no orphan is left in the store (the re-run reclaimed them).

At the end ``gc`` must leave no stray file in the store, no staging directory
of an interrupted create and no abandoned export staging directory.  The
exit code is 0 when every check of every trial passed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xr_methyl.store import Layout

#: A layout with several shards per block, so that kills land between shard writes too.
LAYOUT = Layout(sample_block=4, chunk_rows=4, cpg_chunk=512, cpg_shard=1024)
SAMPLES, CPGS, BATCH_SIZE = 32, 4000, 4


@dataclass
class Summary:
    """What :func:`run_trials` did and found."""

    trials: int = 0
    writers: int = 0
    killed: int = 0
    survivors_ok: int = 0
    kill_phases: Counter = field(default_factory=Counter)  # where the killed writers were
    samples_checked: int = 0  # committed samples compared bit for bit (summed over trials)
    max_stray_files: int = 0  # files in the store that are not committed content, after a re-run
    reclaimed_by_gc: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        phases = ", ".join(f"{k}: {v}" for k, v in sorted(self.kill_phases.items(), key=lambda kv: -kv[1]))
        return [
            f"trials: {self.trials}, writer processes: {self.writers}, SIGKILLed: {self.killed}, "
            f"ran to the end: {self.survivors_ok}",
            f"where the kills landed: {phases}",
            f"committed samples compared bit for bit with the warehouse: {self.samples_checked:,}",
            f"most stray files in the store after a re-run: {self.max_stray_files}; reclaimed by the final gc: "
            f"{self.reclaimed_by_gc}",
            f"failures: {len(self.failures)}" + "".join(f"\n  {f}" for f in self.failures[:20]),
            f"{self.seconds:.0f} s",
        ]


# -- the truth: the Iceberg tables read back with pyiceberg, pivoted with pandas -------------------
def warehouse_truth(warehouse_path: Path, cpg_labels: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{sample: (beta float32, coverage int64)} on the given CpG axis, independent of xr_methyl's ingest."""
    from pyiceberg.catalog.sql import SqlCatalog

    from xr_methyl.warehouse.local import CATALOG_NAME, NAMESPACE

    catalog = SqlCatalog(
        CATALOG_NAME, uri=f"sqlite:///{warehouse_path}/catalog.db", warehouse=f"file://{warehouse_path}/warehouse"
    )

    def table(name: str):
        return catalog.load_table(f"{NAMESPACE}.{name}").scan().to_arrow().to_pandas()

    beta = table("beta").pivot(index="sample_id", columns="cpg_id", values="beta")
    coverage = table("coverage").pivot(index="sample_id", columns="cpg_id", values="coverage")
    beta = beta.reindex(columns=cpg_labels).astype(np.float32)
    coverage = coverage.reindex(index=beta.index, columns=cpg_labels).fillna(0).astype(np.int64)
    return {s: (beta.loc[s].to_numpy(), coverage.loc[s].to_numpy()) for s in beta.index}


# -- one writer process ---------------------------------------------------------------------------
def _child(store: str, warehouse: str, staging: str, go: str | None, ids: list[str]) -> int:
    import duckdb  # noqa: F401  (imported before "ready": kills should land in the work, not in imports)
    import pyiceberg.catalog.sql  # noqa: F401
    import xarray  # noqa: F401

    from xr_methyl import Loader, LocalWarehouse, MethylStore, StoreExistsError

    handler = logging.StreamHandler(sys.stdout)  # flushed per record: the parent reads the last phase
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("xr_methyl")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    print("ready", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.005)
    wh = LocalWarehouse(warehouse, staging_dir=staging)
    if not os.path.exists(store):
        print("creating store", flush=True)
        try:
            MethylStore.create(store, warehouse=wh, layout=LAYOUT)
        except StoreExistsError:
            pass  # another writer created it first
    print("loading", flush=True)
    ds = Loader(MethylStore.open(store), wh).load(ids, progress=False)
    got = list(ds.sample.values)
    values = ds.beta.values  # read back what was returned
    if got != ids or values.shape != (len(ids), ds.sizes["cpg"]):
        print(f"WRONG RESULT {got}", flush=True)
        return 2
    print("done", flush=True)
    return 0


def spawn_writer(store: Path, warehouse: Path, staging: Path, ids: list[str], *, go: Path | None = None):
    """Start one ``ensure`` in a child process; it prints ``ready`` once imported, ``done`` at the end."""
    cmd = [
        sys.executable,
        "-m",
        "xr_methyl.testing.faults",
        "_child",
        str(store),
        str(warehouse),
        str(staging),
        str(go or ""),
        *ids,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# -- checks -----------------------------------------------------------------------------------------
def check_store(path: Path, truth, *, before: set[str], allowed: set[str], fail) -> set[str]:
    """Open the store, check what it shows against the truth; return the committed samples."""
    import xarray as xr

    from xr_methyl import MethylStore
    from xr_methyl.store.verify import verify_store

    store = MethylStore.open(path)
    committed = store.sample_ids
    ds = xr.open_dataset(path, engine="methylzarr")
    if list(ds.sample.values) != committed:
        fail("a reader sees other samples than sample_ids.json commits")
    lost = before - set(committed)
    if lost:
        fail(f"committed samples lost: {sorted(lost)}")
    unasked = set(committed) - allowed
    if unasked:
        fail(f"samples nobody asked for appeared: {sorted(unasked)}")
    if committed:
        beta, coverage = ds.beta.values, ds.coverage.values
        for i, s in enumerate(committed):
            want_beta, want_cov = truth[s]
            if not np.array_equal(beta[i].view(np.uint32), want_beta.view(np.uint32)):
                fail(f"beta of committed sample {s!r} differs from the warehouse")
            if not np.array_equal(coverage[i].astype(np.int64), want_cov):
                fail(f"coverage of committed sample {s!r} differs from the warehouse")
    report = verify_store(store)
    for problem in report.problems:
        fail(f"verify: {problem}")
    return set(committed)


def stray_files(path) -> list[str]:
    """Files in the store that are not committed content (orphans, temporaries, leftovers).

    ``path``: a store directory, or a storage (an S3 store's ``store.storage``).
    """
    from xr_methyl import MethylStore
    from xr_methyl.store.cpg_axis import INDEX_DIR
    from xr_methyl.store.layout import (
        ARRAY_KEYS,
        BATCHES,
        CPG_IDS,
        MANIFEST,
        PROVENANCE,
        SAMPLE_IDS,
        SAMPLES,
        block_record_key,
    )

    store = MethylStore.open(path)
    n_blocks = store.commit.n_rows // store.layout.sample_block
    keep = {
        MANIFEST,
        SAMPLE_IDS,
        SAMPLES,
        BATCHES,
        PROVENANCE,
        CPG_IDS,
        *(f"{ARRAY_KEYS[name]}/zarr.json" for name in store.array_names),
    }
    for b in range(n_blocks):
        keep.add(block_record_key(b))
        for name in store.array_names:
            keep.update(store.shard_keys(name, b))
    # The CpG axis's look-up tables are written once, at creation.
    return sorted(key for key, _ in store.storage.walk() if key not in keep and not key.startswith(f"{INDEX_DIR}/"))


# -- the trials -------------------------------------------------------------------------------------
def run_trials(
    trials: int, *, workdir: Path, seed: int = 0, max_writers: int = 4, kill_probability: float = 0.75, out=print
) -> Summary:
    """Run ``trials`` kill trials in ``workdir`` (see the module docstring) and return the summary."""
    from xr_methyl import Loader, LocalWarehouse, MethylStore
    from xr_methyl.synthetic import build_cohort

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    workdir = Path(workdir)
    wh_path, store_path, staging = workdir / "warehouse", workdir / "store.methyl.zarr", workdir / "export-staging"
    staging.mkdir(parents=True, exist_ok=True)
    cohort = build_cohort(LocalWarehouse(wh_path), n_samples=SAMPLES, n_cpgs=CPGS, batch_size=BATCH_SIZE, seed=seed)
    all_ids = list(cohort.sample_ids)
    wh = LocalWarehouse(wh_path, staging_dir=staging)
    labels = np.asarray(cohort.cpg_ids.to_pylist())
    truth = warehouse_truth(wh_path, labels)
    summary = Summary()

    # Calibrate: how long one uninterrupted ensure of two batches takes after start-up.
    child = spawn_writer(store_path, wh_path, staging, all_ids[:8])
    child.stdout.readline()
    t0 = time.perf_counter()
    out_text, err_text = child.communicate(timeout=300)
    ingest_seconds = time.perf_counter() - t0
    if child.returncode != 0:
        summary.failures.append(f"calibration run failed: {err_text[-500:]}")
        return summary
    shutil.rmtree(store_path)
    out(f"one uninterrupted ensure of 8 samples takes {ingest_seconds:.2f} s after start-up; kills land within it")

    committed: set[str] = set()
    for trial in range(trials):
        failures_before = len(summary.failures)

        def fail(message: str, trial=trial) -> None:
            summary.failures.append(f"trial {trial}: {message}")

        reset = trial % 10 == 0 or len(committed) > 0.7 * len(all_ids)
        if reset:
            shutil.rmtree(store_path, ignore_errors=True)
            committed = set()
        n_writers = int(rng.integers(1, max_writers + 1))
        requests = [
            sorted(rng.choice(all_ids, size=int(rng.integers(2, 9)), replace=False).tolist()) for _ in range(n_writers)
        ]
        procs = [spawn_writer(store_path, wh_path, staging, ids) for ids in requests]
        for p in procs:
            p.stdout.readline()  # "ready": imports done
        ready = time.perf_counter()
        window = ingest_seconds * (1.2 + 0.4 * (n_writers - 1)) + (1.0 if reset else 0.0)
        kill_at = {
            i: ready + float(rng.uniform(0, window)) for i in range(n_writers) if rng.random() < kill_probability
        }
        for i, when in sorted(kill_at.items(), key=lambda kv: kv[1]):
            time.sleep(max(0.0, when - time.perf_counter()))
            if procs[i].poll() is None:
                procs[i].send_signal(signal.SIGKILL)
        summary.writers += n_writers
        for i, p in enumerate(procs):
            try:
                stdout, stderr = p.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
                stdout, stderr = p.communicate()
                fail(f"writer {i} hung")
            if p.returncode == -signal.SIGKILL:
                summary.killed += 1
                lines = [ln for ln in stdout.splitlines() if ln.strip()]
                summary.kill_phases[_phase(lines[-1] if lines else "ready")] += 1
            elif p.returncode == 0 and "done" in stdout:
                summary.survivors_ok += 1
                if i in kill_at:
                    summary.kill_phases["finished before its kill"] += 1
            else:
                fail(f"writer {i} (not killed) failed with exit code {p.returncode}: {stderr.strip()[-800:]}")

        asked = set().union(*map(set, requests))
        try:
            if store_path.exists():
                committed = check_store(store_path, truth, before=committed, allowed=committed | asked, fail=fail)
            elif committed or not reset:
                fail("the store disappeared")
            # Re-running the same ensure completes it.
            if not store_path.exists():
                MethylStore.create(store_path, warehouse=wh, layout=LAYOUT)
            for ids in requests:
                result = Loader(MethylStore.open(store_path), wh).load(ids, progress=False)
                if list(result.sample.values) != ids:
                    fail(f"the re-run returned {list(result.sample.values)} for {ids}")
            committed = check_store(store_path, truth, before=committed, allowed=committed | asked, fail=fail)
            if not asked <= committed:
                fail(f"the re-run left samples out: {sorted(asked - committed)}")
            summary.samples_checked += len(committed)
            stray = [k for k in stray_files(store_path) if not _young_unlocked_temp(store_path, k)]
            if stray:
                fail(f"orphans left in the store after a re-run: {stray[:5]}")
            summary.max_stray_files = max(summary.max_stray_files, len(stray_files(store_path)))
        except Exception as err:  # a check that cannot even run is a failure of the trial
            fail(f"{type(err).__name__}: {err}")
        summary.trials += 1
        status = "ok" if len(summary.failures) == failures_before else "FAILED"
        out(
            f"trial {trial + 1}/{trials}: {n_writers} writer(s), {len(kill_at)} kill(s), "
            f"{len(committed)} samples committed: {status}"
        )

    # Everything the killed writers left behind goes with one gc.
    store = MethylStore.open(store_path)
    report = store.gc(warehouse=wh)
    summary.reclaimed_by_gc = len(report.removed)
    leftovers = [k for k in stray_files(store_path) if not _young_unlocked_temp(store_path, k)]
    leftovers += [p.name for p in staging.iterdir()] + [p.name for p in workdir.glob(".*.creating-*")]
    if leftovers:
        summary.failures.append(f"after gc: leftovers {leftovers[:5]}")
    summary.seconds = time.perf_counter() - started
    return summary


def _young_unlocked_temp(store_path: Path, key: str) -> bool:
    """A temporary written without the lock (a lock attempt, a writability probe) by a killed writer.

    The store leaves these alone for a minute (their writer may be alive) and reclaims them after.
    """
    from xr_methyl.store.gc import STALE_TEMP_SECONDS
    from xr_methyl.store.layout import LOCK

    if not key.startswith((f".{LOCK}.", ".probe-")):
        return False
    try:
        return time.time() - (store_path / key).stat().st_mtime <= STALE_TEMP_SECONDS
    except FileNotFoundError:
        return True


def _phase(line: str) -> str:
    """Name the step a writer was in from the last line it logged."""
    for marker, phase in (
        ("exporting", "warehouse export"),
        ("scattering", "scatter"),
        ("writing rows", "chunk write"),
        ("writing sidecars", "sidecar write"),
        ("committing", "commit"),
        ("committed batch", "between batches"),
        ("creating store", "store create"),
        ("loading", "diff / resolve"),
        ("ready", "start-up"),
        ("done", "finished"),
    ):
        if marker in line:
            return phase
    return "other"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        store, warehouse, staging, go, *ids = argv[1:]
        return _child(store, warehouse, staging, go or None, ids)
    parser = argparse.ArgumentParser(prog="python -m xr_methyl.testing.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="kill trials to run (default: %(default)s)")
    parser.add_argument("--writers", type=int, default=4, help="at most this many writers per trial (default: 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="work in this folder (default: a temporary one, removed at the end)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="xr-methyl-faults-"))
    try:
        summary = run_trials(
            args.trials,
            workdir=workdir,
            seed=args.seed,
            max_writers=args.writers,
            out=lambda line: print(line, flush=True),
        )
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps({**summary.__dict__, "kill_phases": dict(summary.kill_phases)}, indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0 if not summary.failures else 1


if __name__ == "__main__":
    sys.exit(main())
